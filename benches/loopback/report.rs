//! A pass's report: per-target rows (latency percentiles, throughput, CPU per hit), rendered as a
//! markdown table followed by the ratios the targets are judged by.

use std::time::Duration;

use crate::support::stats::percentiles;
use crate::Pass;

/// p50 and p99 in microseconds.
pub fn p50_p99(samples: &mut [Duration]) -> (f64, f64) {
    let [p50, p99] = percentiles(samples, [0.5, 0.99]).map(|d| d.as_secs_f64() * 1e6);
    (p50, p99)
}

pub struct Row {
    pub name: &'static str,
    pub hit: (f64, f64),
    pub miss: Option<(f64, f64)>,
    pub rps: f64,
    /// The target's CPU µs per hit: one connection, and 32 connections.
    pub cpu_one: Option<f64>,
    pub cpu_many: Option<f64>,
    /// The load generator's CPU µs per request and busy share (32 connections).
    pub client_cpu: f64,
    pub client_busy: f64,
    /// p50 of the proxy's own `Server-Timing` on hits, µs.
    pub inside: Option<f64>,
}

const TABLE_HEAD: &str = "\
| target     | hit p50 µs | hit p99 µs | miss p50 µs | miss p99 µs | hit rps (32 conn) | CPU µs/hit (1 conn) | CPU µs/hit (32 conn) |
|------------|-----------:|-----------:|------------:|------------:|------------------:|--------------------:|---------------------:|
";

/// One table line, aligned with `TABLE_HEAD`.
fn table_line([a, b, c, d, e, f, g, h]: [&str; 8]) -> String {
    format!("| {a:<10} | {b:>10} | {c:>10} | {d:>11} | {e:>11} | {f:>17} | {g:>19} | {h:>20} |\n")
}

/// A pass's table (printed and written as-is), then its ratios.
pub fn render(pass: Pass, rows: &[Row], skipped: &[(&str, String)]) -> String {
    let us = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.1}"));
    let mut out = format!("### {}\n\n{TABLE_HEAD}", pass.title());
    for r in rows {
        let [a, b] = [r.hit.0, r.hit.1].map(|v| format!("{v:.1}"));
        let [c, d] = [r.miss.map(|m| m.0), r.miss.map(|m| m.1)].map(us);
        let [e, f, g] = [format!("{:.0}", r.rps), us(r.cpu_one), us(r.cpu_many)];
        out += &table_line([r.name, &a, &b, &c, &d, &e, &f, &g]);
    }
    for (name, note) in skipped {
        out += &table_line([name, "skipped", "-", "-", "-", note, "-", "-"]);
    }
    out + "\n" + &ratios(rows)
}

/// The ratio lines under a pass's table.
fn ratios(rows: &[Row]) -> String {
    let find = |name| rows.iter().find(|r| r.name == name);
    let ratio = |a: Option<f64>, b: Option<f64>| match a.zip(b) {
        Some((a, b)) => format!("{:.2}", a / b),
        None => "n/a".into(),
    };
    let cpu = |name| find(name).and_then(|r| r.cpu_many);
    let rps = |name| find(name).map(|r| r.rps);
    let above = |name| match find(name).zip(find("direct")) {
        Some((r, direct)) => format!("{name} {:+.1} µs", r.hit.0 - direct.hit.0),
        None => format!("{name} n/a"),
    };
    let inside = find("proxy").and_then(|r| r.inside);
    let inside = inside.map_or("n/a".into(), |us| format!("{us:.1} µs"));
    let client = rows.iter().map(|r| {
        let (us, busy) = (r.client_cpu, r.client_busy * 100.0);
        format!("{} {us:.1} µs/req ({busy:.0}% busy)", r.name)
    });
    // What two cores shared with the load generator allow at most: 2 s of CPU per second over
    // the CPU a request costs the target and the load generator together.
    let ceiling = |name| {
        find(name)
            .and_then(|r| r.cpu_many.map(|cpu| 2e6 / (cpu + r.client_cpu)))
            .zip(rps("nginx-auto"))
            .map_or("n/a".into(), |(most, auto)| {
                format!("{most:.0} rps = {:.2}x nginx-auto", most / auto)
            })
    };
    let ceilings = if find("nginx-auto").is_some() {
        format!(
            "2-core ceiling (2 s of CPU / (CPU per hit + the load generator's per request)): \
             a server as cheap as the floor {}; the proxy at one worker's CPU per hit {}; \
             proxy-2 at its own {}\n",
            ceiling("floor"),
            ceiling("proxy"),
            ceiling("proxy-2"),
        )
    } else {
        String::new()
    };
    // What hyper itself costs: the stand-in memU is a hyper 1.x server that reads the body and
    // answers a fixed one, about the least a hyper-based proxy can cost per hit and the most
    // hits it answers on one thread; the targets are placed against it.
    let over_direct = |us: Option<f64>| match us.zip(cpu("direct")) {
        Some((us, direct)) => format!("{:+.1} µs", us - direct),
        None => "n/a".into(),
    };
    let hyper_floor = format!(
        "hyper floor (direct: a hyper 1.x server reading the body, answering a fixed one): \
         CPU per hit direct / nginx = {}; 0.65 x nginx = direct {}, proxy = direct {}; \
         hit rps direct (one thread) / nginx-auto = {}\n",
        ratio(cpu("direct"), cpu("nginx")),
        over_direct(cpu("nginx").map(|nginx| 0.65 * nginx)),
        over_direct(cpu("proxy")),
        ratio(rps("direct"), rps("nginx-auto")),
    );
    format!(
        "CPU per hit (32 conn): proxy / nginx = {} (target <= 0.65); proxy - floor = {} µs\n\
         hit rps (32 conn): proxy-2 / nginx-auto = {} (target >= 1.4); proxy / nginx = {}\n\
         hit p50 (1 conn) above direct: {}, {}, {} (proxy inside its service, Server-Timing: {inside})\n\
         load generator (one thread, 32 conn): {}\n",
        ratio(cpu("proxy"), cpu("nginx")),
        cpu("proxy").zip(cpu("floor")).map_or("n/a".into(), |(p, f)| format!("{:.1}", p - f)),
        ratio(rps("proxy-2"), rps("nginx-auto")),
        ratio(rps("proxy"), rps("nginx")),
        above("floor"),
        above("proxy"),
        above("nginx"),
        client.collect::<Vec<_>>().join(", "),
    ) + &hyper_floor
        + &ceilings
}
