//! A loopback server under load: nginx (Debian's `nginx-light`, one worker, access log on) serving
//! a small page, driven by `wrk` (Debian's package) with keep-alive connections. Reported:
//! requests/s and wrk's 99th percentile latency.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};

use crate::detect::{Guard, wait_until};

/// A running nginx on a loopback port.
pub struct Nginx {
    _child: Guard,
    pub port: u16,
}

impl Nginx {
    pub fn start(dir: &Path) -> anyhow::Result<Nginx> {
        let port = super::monitor::free_port()?;
        let www = dir.join("www");
        std::fs::create_dir_all(&www)?;
        std::fs::write(www.join("index.html"), "<h1>hello</h1>\n".repeat(40))?;
        let d = dir.display();
        std::fs::write(
            dir.join("nginx.conf"),
            format!(
                "user root;\nworker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\n\
                 events {{ worker_connections 1024; }}\n\
                 http {{\n  access_log {d}/access.log;\n  types {{ text/html html; }}\n\
                 server {{ listen 127.0.0.1:{port}; root {d}/www; }}\n}}\n"
            ),
        )?;
        let child = Guard(
            Command::new("nginx")
                .arg("-p")
                .arg(dir)
                .arg("-c")
                .arg(dir.join("nginx.conf"))
                .args(["-g", "daemon off;"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .context("starting nginx (scripts/setup installs nginx-light)")?,
        );
        wait_until("nginx to listen", Duration::from_secs(10), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).ok()
        })?;
        Ok(Nginx {
            _child: child,
            port,
        })
    }
}

/// One wrk run: (requests/s, p99 latency in ms).
pub fn wrk(port: u16, secs: u64) -> anyhow::Result<(f64, f64)> {
    let out = Command::new("wrk")
        .args(["-t1", "-c32", &format!("-d{secs}s"), "--latency"])
        .arg(format!("http://127.0.0.1:{port}/index.html"))
        .output()
        .context("running wrk (scripts/setup installs it)")?;
    if !out.status.success() {
        bail!("wrk failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    parse_wrk(&String::from_utf8_lossy(&out.stdout))
        .with_context(|| format!("wrk output: {}", String::from_utf8_lossy(&out.stdout)))
}

fn parse_wrk(text: &str) -> Option<(f64, f64)> {
    let rps = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Requests/sec:"))?
        .trim()
        .parse()
        .ok()?;
    let p99 = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("99%"))
        .and_then(|v| duration_ms(v.trim()))?;
    Some((rps, p99))
}

/// wrk's durations: "812.00us", "1.23ms", "2.01s".
fn duration_ms(v: &str) -> Option<f64> {
    for (unit, scale) in [("us", 1e-3), ("ms", 1.0), ("s", 1e3), ("m", 60e3)] {
        if let Some(n) = v.strip_suffix(unit) {
            return n.parse::<f64>().ok().map(|n| n * scale);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_wrk_output() {
        let text = "Running 2s test @ http://127.0.0.1:1/\n  Latency Distribution\n     50%  350.00us\n     99%    1.52ms\n  1000 requests in 2.00s, 1.00MB read\nRequests/sec:  50123.45\nTransfer/sec:      5.00MB\n";
        assert_eq!(parse_wrk(text), Some((50123.45, 1.52)));
        assert_eq!(duration_ms("812.00us"), Some(0.812));
        assert_eq!(parse_wrk("garbage"), None);
    }
}
