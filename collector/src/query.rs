//! `collector deviations`: asks a collector over gRPC and prints the answer.

use std::io::{self, Write};
use std::time::{Duration, SystemTime};

use proto::v1::{
    DeviationKind, ListDeviationsRequest, Severity, StoredDeviation, query_client::QueryClient,
};

use crate::cli::{DeviationsArgs, ExportArgs, FilterArgs};
use crate::convert::{table_cells, to_json, unix_nanos};
use crate::credentials::ClientArgs;
use crate::ocsf::detection_finding;
use crate::server::MAX_RESPONSE_BYTES;

/// How long to wait for the collector to accept the connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// Why a query failed. Each is printed as one line.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error("invalid --server URL {url:?}: {source}")]
    BadUrl {
        url: String,
        source: tonic::transport::Error,
    },
    #[error(transparent)]
    Credentials(#[from] crate::credentials::CredentialError),
    #[error("invalid --since {value:?}: expected a duration like 1h or 30m, or an RFC 3339 time")]
    BadSince { value: String },
    #[error("invalid --until {value:?}: expected a duration like 1h or 30m, or an RFC 3339 time")]
    BadUntil { value: String },
    #[error("cannot reach collector at {url}: {reason}; is `collector serve` running?")]
    Unreachable { url: String, reason: String },
    #[error("collector at {url} answered {}", crate::credentials::describe(status))]
    Status { url: String, status: tonic::Status },
    #[error("cannot write output: {0}")]
    Output(io::Error),
    #[error("cannot write the export to {path}: {source}")]
    Export { path: String, source: io::Error },
}

/// Runs the query described by `args` and prints it to stdout.
pub async fn run(args: &DeviationsArgs) -> Result<(), QueryError> {
    let request = request(&args.filter, args.limit, SystemTime::now())?;
    let deviations = list_with(&args.server, request, &args.client).await?;
    let printed = if args.json {
        print_json(&mut io::stdout().lock(), &deviations)
    } else {
        print_table(&mut io::stdout().lock(), &deviations)
    };
    match printed {
        // `collector deviations | head` closes stdout early; that is not an error.
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
        other => other.map_err(QueryError::Output),
    }
}

/// The request for `args` and at most `limit` deviations, with `--since` relative to `now`.
pub fn request(
    args: &FilterArgs,
    limit: u32,
    now: SystemTime,
) -> Result<ListDeviationsRequest, QueryError> {
    let since_unix_nanos = match &args.since {
        None => 0,
        Some(value) => unix_nanos(parse_since(value, now).ok_or_else(|| QueryError::BadSince {
            value: value.clone(),
        })?),
    };
    Ok(ListDeviationsRequest {
        workload: args.workload.clone().unwrap_or_default(),
        host: args.host.clone().unwrap_or_default(),
        kind: args.kind.map_or(0, |k| DeviationKind::from(k).into()),
        min_severity: args.min_severity.map_or(0, |s| Severity::from(s).into()),
        since_unix_nanos,
        until_unix_nanos: match &args.until {
            None => 0,
            Some(value) => {
                unix_nanos(parse_since(value, now).ok_or_else(|| QueryError::BadUntil {
                    value: value.clone(),
                })?)
            }
        },
        limit,
    })
}

fn parse_since(value: &str, now: SystemTime) -> Option<SystemTime> {
    if let Ok(ago) = humantime::parse_duration(value) {
        return Some(now.checked_sub(ago).unwrap_or(SystemTime::UNIX_EPOCH));
    }
    humantime::parse_rfc3339_weak(value).ok()
}

/// Calls `Query/ListDeviations` on the collector at `url`, plain text and without a token.
pub async fn list(
    url: &str,
    request: ListDeviationsRequest,
) -> Result<Vec<StoredDeviation>, QueryError> {
    list_with(url, request, &ClientArgs::default()).await
}

/// Calls `Query/ListDeviations` on the collector at `url` with `credentials`.
pub async fn list_with(
    url: &str,
    request: ListDeviationsRequest,
    credentials: &ClientArgs,
) -> Result<Vec<StoredDeviation>, QueryError> {
    let endpoint = credentials.endpoint(url)?.connect_timeout(CONNECT_TIMEOUT);
    let bearer = credentials.interceptor()?;
    let channel = endpoint
        .connect()
        .await
        .map_err(|e| QueryError::Unreachable {
            url: url.to_owned(),
            reason: crate::one_line(&e),
        })?;
    let mut client = QueryClient::with_interceptor(channel, bearer)
        .max_decoding_message_size(MAX_RESPONSE_BYTES);
    let response = client
        .list_deviations(request)
        .await
        .map_err(|status| match status.code() {
            tonic::Code::Unavailable => QueryError::Unreachable {
                url: url.to_owned(),
                reason: status.message().to_owned(),
            },
            _ => QueryError::Status {
                url: url.to_owned(),
                status,
            },
        })?;
    Ok(response.into_inner().deviations)
}

/// `collector export`: the matching deviations as OCSF Detection Findings, oldest first, to
/// `--output` (appended) or stdout.
pub async fn export(args: &ExportArgs) -> Result<(), QueryError> {
    let request = request(&args.filter, args.limit, SystemTime::now())?;
    let mut deviations = list_with(&args.server, request, &args.client).await?;
    // The collector answers newest first; a SIEM wants events in the order they happened.
    deviations.reverse();
    let written = match &args.output {
        Some(path) => std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .and_then(|file| print_ocsf(&mut io::BufWriter::new(file), &deviations))
            .map_err(|source| QueryError::Export {
                path: path.display().to_string(),
                source,
            }),
        None => match print_ocsf(&mut io::stdout().lock(), &deviations) {
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
            other => other.map_err(QueryError::Output),
        },
    };
    written?;
    if let Some(path) = &args.output {
        eprintln!(
            "exported {} deviations to {}",
            deviations.len(),
            path.display()
        );
    }
    Ok(())
}

/// One OCSF Detection Finding per line.
pub fn print_ocsf(out: &mut impl Write, deviations: &[StoredDeviation]) -> io::Result<()> {
    for deviation in deviations {
        serde_json::to_writer(&mut *out, &detection_finding(deviation))?;
        out.write_all(b"\n")?;
    }
    out.flush()
}

/// One JSON object per line.
pub fn print_json(out: &mut impl Write, deviations: &[StoredDeviation]) -> io::Result<()> {
    for deviation in deviations {
        serde_json::to_writer(&mut *out, &to_json(deviation))?;
        out.write_all(b"\n")?;
    }
    out.flush()
}

/// An aligned table: time, severity, workload, kind, summary.
pub fn print_table(out: &mut impl Write, deviations: &[StoredDeviation]) -> io::Result<()> {
    if deviations.is_empty() {
        writeln!(out, "no deviations")?;
        return out.flush();
    }
    let header = ["TIME", "SEVERITY", "WORKLOAD", "KIND", "SUMMARY"].map(str::to_owned);
    let rows: Vec<[String; 5]> = std::iter::once(header)
        .chain(deviations.iter().map(table_cells))
        .collect();
    let mut widths = [0usize; 4];
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    for row in &rows {
        for (width, cell) in widths.iter().zip(row) {
            write!(out, "{cell:<width$}  ")?;
        }
        writeln!(out, "{}", row[4])?;
    }
    out.flush()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::convert::tests::deviation;

    #[test]
    fn table_columns_line_up() {
        let mut long = deviation("b", 2_000_000_000_000_000_000);
        long.workload.as_mut().unwrap().id = "unit:a-much-longer-workload.service".to_owned();
        let stored = [deviation("a", 1_000_000_000_000_000_000), long].map(|d| StoredDeviation {
            deviation: Some(d),
            ..StoredDeviation::default()
        });
        let mut out = Vec::new();
        print_table(&mut out, &stored).unwrap();
        let text = String::from_utf8(out).unwrap();
        let kind_columns: Vec<usize> = text
            .lines()
            .map(|l| l.find("KIND").or_else(|| l.find("new-exec-edge")).unwrap())
            .collect();
        assert_eq!(kind_columns.len(), 3, "{text}");
        assert!(kind_columns.iter().all(|&c| c == kind_columns[0]), "{text}");
    }

    #[test]
    fn since_accepts_durations_and_times() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(10_000);
        assert_eq!(
            parse_since("1h", now),
            Some(SystemTime::UNIX_EPOCH + Duration::from_secs(6_400))
        );
        assert_eq!(
            parse_since("1970-01-01T00:00:10Z", now),
            Some(SystemTime::UNIX_EPOCH + Duration::from_secs(10))
        );
        assert_eq!(parse_since("yesterday-ish", now), None);
    }
}
