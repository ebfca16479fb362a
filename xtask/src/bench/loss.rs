//! The event rate at which the first loss occurs with full userspace processing: the sensor runs
//! with `--no-kernel-filter` (every open reaches the agent, which decodes, attributes and judges
//! it) while `loadgen open-rate` offers open+close at increasing paced rates. After each step the
//! sensor's own Prometheus counters say how many events it decoded and how many records the
//! kernel could not deliver (ring buffer full). The agent's CPU per 100k events/s comes from the
//! steps without loss.

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, bail};

use super::monitor::{SensorUnderTest, cpu_seconds, free_port, peak_rss_kib};

/// One rate step.
struct Step {
    offered: u64,
    /// Load generator processes, each offering `offered`.
    procs: usize,
    /// open+close per second the load generator achieved.
    achieved: f64,
    /// Events the agent decoded per second over the step.
    decoded: f64,
    lost: u64,
    /// Agent CPU (cores) over the step.
    cpu: f64,
    rss_kib: u64,
}

/// (decoded events, lost records, undecodable records) from the sensor's metrics endpoint.
fn counters(port: u16) -> anyhow::Result<(f64, f64, f64)> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    let sum = |prefix: &str| -> f64 {
        text.lines()
            .filter(|l| l.starts_with(prefix))
            .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
            .sum()
    };
    Ok((
        sum("sensor_events_total{"),
        sum("sensor_kernel_losses_total{reason=\"lost_"),
        sum("sensor_undecodable_records_total"),
    ))
}

fn step(
    bin: &Path,
    sensor: &SensorUnderTest,
    metrics: u16,
    (rate, procs): (u64, usize),
    secs: f64,
) -> anyhow::Result<Step> {
    let (events0, lost0, undecodable0) = counters(metrics)?;
    let cpu0 = cpu_seconds(sensor.sensor.id());
    let children = (0..procs)
        .map(|_| {
            Command::new(bin.join("loadgen"))
                .args(["open-rate", &rate.to_string(), &secs.to_string()])
                .stdout(std::process::Stdio::piped())
                .spawn()
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut achieved = 0.0;
    for child in children {
        let out = child.wait_with_output()?;
        if !out.status.success() {
            bail!(
                "loadgen open-rate failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let result: serde_json::Value = serde_json::from_slice(&out.stdout)?;
        achieved += result["ops_per_sec"].as_f64().context("ops/s")?;
    }
    // The agent drains every few ms; its metrics refresh every second.
    std::thread::sleep(Duration::from_millis(1500));
    let cpu = cpu_seconds(sensor.sensor.id()) - cpu0;
    let (events1, lost1, undecodable1) = counters(metrics)?;
    let (decoded, opened) = (events1 - events0, achieved * secs);
    // A sensor whose programs and agent disagree on the records' layout (e.g. a stale kernel
    // object in a reused build directory) still runs, costs and "keeps up": only its counters
    // tell. A step that lost nothing delivered every open; a tenth allows for the metrics' lag.
    if undecodable1 > undecodable0 || (lost1 == lost0 && decoded < 0.1 * opened) {
        bail!(
            "the sensor decoded {decoded} events for {opened:.0} opens and could not decode {} \
             records: its kernel programs and agent disagree (a stale build?)",
            undecodable1 - undecodable0
        );
    }
    Ok(Step {
        offered: rate,
        procs,
        achieved,
        decoded: decoded / secs,
        lost: (lost1 - lost0) as u64,
        cpu: cpu / secs,
        rss_kib: peak_rss_kib(sensor.sensor.id()),
    })
}

/// The loss section: rate steps until the first loss (0 = unpaced, as fast as one core opens).
pub fn section(bin: &Path, quick: bool) -> anyhow::Result<String> {
    // (opens/s per process, processes); 0 = unpaced. Two unpaced processes use both cores.
    let rates: &[(u64, usize)] = if quick {
        &[(10_000, 1), (0, 1)]
    } else {
        &[
            (25_000, 1),
            (50_000, 1),
            (100_000, 1),
            (150_000, 1),
            (200_000, 1),
            (300_000, 1),
            (0, 1),
            (0, 2),
        ]
    };
    let secs = if quick { 1.0 } else { 3.0 };
    let dir = tempfile::tempdir()?;
    let metrics = free_port()?;
    let sensor = SensorUnderTest::start(bin, dir.path(), true, Some(metrics))?;
    super::super::detect::wait_until("the sensor's metrics", Duration::from_secs(10), || {
        counters(metrics).ok()
    })?;
    let mut steps = Vec::new();
    for &rate in rates {
        eprintln!(
            "[bench] loss sweep: {} x {} opens/s (0 = unpaced)",
            rate.1, rate.0
        );
        let s = step(bin, &sensor, metrics, rate, secs)?;
        let lost = s.lost;
        steps.push(s);
        if lost > 0 {
            break;
        }
    }
    sensor.stop()?;

    let offered = |s: &Step| match (s.offered, s.procs) {
        (0, 1) => "unpaced".to_owned(),
        (0, n) => format!("unpaced x {n} processes"),
        (r, 1) => r.to_string(),
        (r, n) => format!("{r} x {n} processes"),
    };
    let mut r = String::new();
    writeln!(
        r,
        "## Event rate at the first loss (full userspace processing)\n"
    )?;
    writeln!(
        r,
        "`sensor run --no-kernel-filter` (every open reaches the agent: decode, attribution, \
         baseline) while `loadgen open-rate` offers open+close of one file at paced rates for \
         {secs} s per step; 0 = unpaced (each load generator opening as fast as it can; the last step runs two, one per core). *decoded* is events \
         per second the agent decoded (its `sensor_events_total`), *lost* the records the kernel \
         could not deliver (`sensor_kernel_losses_total{{reason=lost_*}}`), *agent CPU* its cores \
         in use over the step.\n"
    )?;
    writeln!(
        r,
        "| offered opens/s | achieved opens/s | decoded events/s | lost | agent CPU | CPU per 100k events/s | agent RSS |"
    )?;
    writeln!(r, "|---:|---:|---:|---:|---:|---:|---:|")?;
    for s in &steps {
        writeln!(
            r,
            "| {} | {:.0} | {:.0} | {} | {:.2} core | {} | {} MiB |",
            offered(s),
            s.achieved,
            s.decoded,
            s.lost,
            s.cpu,
            if s.decoded > 1000.0 {
                format!("{:.2} core", s.cpu / (s.decoded / 100_000.0))
            } else {
                "-".to_owned()
            },
            s.rss_kib / 1024
        )?;
    }
    let first_loss = steps.iter().find(|s| s.lost > 0);
    writeln!(
        r,
        "\n{}\n",
        match first_loss {
            Some(s) => format!(
                "First loss at {:.0} decoded events/s (offered opens/s: {}).",
                s.decoded,
                offered(s)
            ),
            None => format!(
                "No loss up to the highest rate the load generators could offer ({:.0} events/s decoded).",
                steps.iter().map(|s| s.decoded).fold(0.0, f64::max)
            ),
        }
    )?;
    Ok(r)
}
