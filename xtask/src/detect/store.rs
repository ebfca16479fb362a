//! Reading back what the real collector stored: deviations per workload and host, through the
//! `collector deviations --json` command, and matching them to runs.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, bail};
use serde_json::Value;

/// One run of a workload: a CI run (by its run id) or a time window of the service.
#[derive(Clone, Debug)]
pub struct Run {
    /// The run id for CI jobs, `None` for the service (judged by time).
    pub run_id: Option<String>,
    /// Wall-clock nanoseconds since the epoch: when the run started and ended.
    pub start_ns: i128,
    pub end_ns: i128,
}

impl Run {
    /// What the report calls it: the run id, or the window's start relative to `origin_ns`.
    pub fn label(&self, origin_ns: i128) -> String {
        match &self.run_id {
            Some(id) => id.clone(),
            None => format!("t+{:.1}s", (self.start_ns - origin_ns) as f64 / 1e9),
        }
    }

    /// Whether deviation `d` belongs to this run.
    pub fn contains(&self, d: &Value) -> bool {
        match &self.run_id {
            Some(id) => d["run_id"] == id.as_str(),
            None => d["time"]
                .as_str()
                .and_then(unix_nanos)
                .is_some_and(|t| t >= self.start_ns && t <= self.end_ns),
        }
    }
}

/// Wall-clock nanoseconds since the epoch, now.
pub fn now_ns() -> i128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i128)
}

/// Every stored deviation of `workload` reported by `host`.
pub fn deviations(
    collector: &Path,
    server: &str,
    workload: &str,
    host: &str,
) -> anyhow::Result<Vec<Value>> {
    let out = Command::new(collector)
        .args([
            "deviations",
            "--server",
            server,
            "--json",
            "--limit",
            "10000",
        ])
        .args(["--workload", workload, "--host", host])
        .output()?;
    if !out.status.success() {
        bail!(
            "collector deviations: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    String::from_utf8(out.stdout)?
        .lines()
        .map(|l| serde_json::from_str(l).context("one JSON object per line"))
        .collect()
}

/// The stored deviations of `workload` reported by `host` whose time falls in
/// `[since_ns, until_ns)` (the newest 10000).
pub fn deviations_between(
    collector: &Path,
    server: &str,
    workload: &str,
    host: &str,
    since_ns: i128,
    until_ns: i128,
) -> anyhow::Result<Vec<Value>> {
    let out = Command::new(collector)
        .args(["deviations", "--server", server, "--json"])
        .args(["--limit", "10000", "--workload", workload, "--host", host])
        .args(["--since", &rfc3339(since_ns), "--until", &rfc3339(until_ns)])
        .output()?;
    if !out.status.success() {
        bail!(
            "collector deviations: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    String::from_utf8(out.stdout)?
        .lines()
        .map(|l| serde_json::from_str(l).context("one JSON object per line"))
        .collect()
}

/// RFC 3339 UTC time of `ns` nanoseconds since the epoch (the inverse of [`unix_nanos`]).
pub fn rfc3339(ns: i128) -> String {
    let secs = ns.div_euclid(1_000_000_000) as i64;
    let nanos = ns.rem_euclid(1_000_000_000);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil from days (Howard Hinnant).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{nanos:09}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

pub fn rank(severity: &str) -> u8 {
    match severity {
        "critical" => 4,
        "high" => 3,
        "medium" => 2,
        "low" => 1,
        _ => 0,
    }
}

pub fn severity(d: &Value) -> u8 {
    rank(d["severity"].as_str().unwrap_or(""))
}

/// Nanoseconds since the epoch of an RFC 3339 UTC time ("2025-01-02T03:04:05.123456789Z").
pub fn unix_nanos(t: &str) -> Option<i128> {
    let (date, rest) = t.split_once('T')?;
    let mut d = date.split('-').map(|x| x.parse::<i64>());
    let (y, m, day) = (d.next()?.ok()?, d.next()?.ok()?, d.next()?.ok()?);
    let rest = rest.strip_suffix('Z')?;
    let (hms, frac) = rest.split_once('.').unwrap_or((rest, "0"));
    let mut h = hms.split(':').map(|x| x.parse::<i64>());
    let secs = h.next()?.ok()? * 3600 + h.next()?.ok()? * 60 + h.next()?.ok()?;
    let nanos: i64 = format!("{frac:0<9}")[..9].parse().ok()?;
    // Days from civil (Howard Hinnant).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some((days * 86_400 + secs) as i128 * 1_000_000_000 + nanos as i128)
}

/// The collector's `received` minus the deviation's `time` (the kernel event time), in ms.
pub fn latency_ms(d: &Value) -> Option<f64> {
    let t = unix_nanos(d["time"].as_str()?)?;
    let r = unix_nanos(d["received"].as_str()?)?;
    Some((r - t) as f64 / 1e6)
}

/// "severity kind: summary".
pub fn describe(d: &Value) -> String {
    format!(
        "{} {}: {}",
        d["severity"].as_str().unwrap_or("?"),
        d["kind"].as_str().unwrap_or("?"),
        d["summary"].as_str().unwrap_or("?")
    )
}

/// The most severe deviation of `run` whose novelty or summary contains one of `needles`.
pub fn best_match<'a>(all: &'a [Value], run: &Run, needles: &[String]) -> Option<&'a Value> {
    all.iter()
        .filter(|d| run.contains(d))
        .filter(|d| {
            let text = format!("{} {}", d["novelty"], d["summary"]);
            needles.iter().any(|n| text.contains(n.as_str()))
        })
        .max_by_key(|d| severity(d))
}

pub fn percentile(values: &[f64], p: f64) -> Option<f64> {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let i = ((p / 100.0) * (v.len() as f64 - 1.0)).round() as usize;
    v.get(i).copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_to_nanos() {
        assert_eq!(unix_nanos("1970-01-01T00:00:01.5Z"), Some(1_500_000_000));
        assert_eq!(
            unix_nanos("2025-01-02T03:04:05.123456789Z"),
            Some(1_735_787_045_123_456_789)
        );
        assert_eq!(unix_nanos("not a time"), None);
        for ns in [
            0,
            1_500_000_000,
            1_735_787_045_123_456_789,
            951_782_400_000_000_001,
        ] {
            assert_eq!(unix_nanos(&rfc3339(ns)), Some(ns), "{}", rfc3339(ns));
        }
        assert_eq!(
            rfc3339(951_782_400_000_000_000),
            "2000-02-29T00:00:00.000000000Z"
        );
    }
}
