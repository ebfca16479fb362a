//! The collector's HTTP endpoint (`--metrics-listen`, default 127.0.0.1:9465): a web page over
//! what is stored, its JSON API, and the Prometheus metrics.
//!
//! | path | answer |
//! |------|--------|
//! | `/` | the page (`web/index.html`, `web/app.js`, `web/style.css`, embedded in the binary): incidents first |
//! | `/api/incidents` | incidents as `collector incidents --json` prints them: highest severity, story, deviations (`entries`) |
//! | `/api/deviations` | newest deviations, each as `collector deviations --json` prints it |
//! | `/api/workloads` | workloads with deviations: count per severity, runs, hosts, first/last |
//! | `/api/agents` | agents: batches, deviations, first/last contact, heartbeat status, silent; their latest events; agent streams open now |
//! | `/metrics` | OpenMetrics text ([`crate::metrics`]) |
//!
//! The API takes the filters of `collector deviations` in the query string: `workload`, `host`,
//! `kind` and `min_severity` (their short names), `since` (a duration such as `1h`) and `limit`.
//! The page passes its own query string on, so `/?workload=W&min_severity=high` is a filtered
//! page. Everything the page shows comes from agents: it builds its DOM with `textContent` only,
//! and a Content-Security-Policy allows no inline script.
//!
//! Whenever `query_token_file` is set the API requires one of its tokens
//! (`Authorization: Bearer <token>`, see [`Web::with_access`]), loopback included: any local
//! user, or a request forged through another service on the host, would otherwise read every
//! finding. The page takes the token from a `#token=…` fragment (kept in the tab's
//! sessionStorage) or asks for it once. Off loopback a token file is required. On loopback the
//! page and the API also answer only requests whose `Host` is a loopback name or address, so that
//! a web site the operator visits cannot read them through DNS rebinding. The page and `/metrics`
//! carry no stored data and stay open. The HTTP plumbing is in `web/http.rs`.

mod http;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::SystemTime;

use clap::ValueEnum as _;
use proto::v1::{DeviationKind, ListDeviationsRequest, ListIncidentsRequest, Severity};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::cli::{KindArg, SeverityArg};
use crate::convert::{rfc3339_nanos, to_json, unix_nanos};
use crate::incidents::render::incident_json;
use crate::metrics::Metrics;
use crate::store::{AgentSummary, Store, StoreError, WorkloadSummary};
use http::{Request, Response};

const INDEX_HTML: &str = include_str!("web/index.html");
const APP_JS: &str = include_str!("web/app.js");
const STYLE_CSS: &str = include_str!("web/style.css");

/// Latest agent events (silent, back, dropped, first contact) `/api/agents` includes.
const AGENT_EVENTS_SHOWN: u32 = 20;
/// Deviations (or groups) an API answer holds when the request sets no limit.
pub const DEFAULT_API_LIMIT: u32 = 200;
/// The page's Content-Security-Policy: its own script and style only, no inline script, no
/// request elsewhere.
const PAGE_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'self'; \
     frame-ancestors 'none'";

/// What the endpoint serves from.
pub struct Web {
    store: Arc<Store>,
    metrics: Arc<Metrics>,
    /// Answer the page and the API only for a loopback `Host` (the endpoint is on loopback).
    loopback_only: bool,
    /// With a token file, the API answers only requests with one of its query tokens
    /// (`Authorization: Bearer <token>`); see [`Web::with_access`].
    api_access: Option<Arc<crate::auth::Access>>,
}

/// Why the endpoint cannot serve as configured.
#[derive(Debug, thiserror::Error)]
#[error(
    "the web page's JSON API would be open on a non-loopback address: set query_token_file      (its tokens are then required as `Authorization: Bearer <token>`), or keep metrics_listen      on 127.0.0.1"
)]
pub struct OpenApiError;

impl Web {
    /// The endpoint for a listener on `local` (loopback addresses get the `Host` check).
    pub fn new(store: Arc<Store>, metrics: Arc<Metrics>, local: IpAddr) -> Web {
        Web {
            store,
            metrics,
            loopback_only: local.is_loopback(),
            api_access: None,
        }
    }

    /// Requires a query token for the JSON API whenever `access` has tokens, loopback included.
    /// Off loopback there must be tokens (refused otherwise); on loopback without a token file the
    /// API stays open to this machine, guarded by the `Host` check.
    pub fn with_access(mut self, access: Arc<crate::auth::Access>) -> Result<Web, OpenApiError> {
        if !self.loopback_only && !access.has_tokens() {
            return Err(OpenApiError);
        }
        if access.has_tokens() {
            self.api_access = Some(access);
        }
        Ok(self)
    }
}

/// Serves the page, the API and `/metrics` on `listener` until `cancel` fires.
pub async fn serve(listener: TcpListener, web: Arc<Web>, cancel: CancellationToken) {
    http::serve(listener, cancel, move |request| {
        let web = Arc::clone(&web);
        async move { answer(web, request).await }
    })
    .await;
}

/// The answer to `request`.
async fn answer(web: Arc<Web>, request: Request) -> Response {
    match route(&request, web.loopback_only) {
        Route::Api(_)
            if web.api_access.as_ref().is_some_and(|access| {
                !crate::auth::header_ok(access, request.authorization.as_deref())
            }) =>
        {
            error(
                401,
                "Unauthorized",
                "this API needs `Authorization: Bearer <token>`",
            )
            .header("WWW-Authenticate", "Bearer")
        }
        Route::Api(api) => {
            let query = request.query;
            tokio::task::spawn_blocking(move || api_response(&web, api, &query))
                .await
                .unwrap_or_else(|e| error(500, "Internal Server Error", &e.to_string()))
        }
        other => respond(other, || web.metrics.render()),
    }
}

/// Whether `host` (a `Host` header: name or address, with or without a port) names this machine.
fn is_loopback_host(host: &str) -> bool {
    let name = if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next().unwrap_or_default()
    } else {
        host.rsplit_once(':').map_or(host, |(name, _)| name)
    };
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    name == "localhost"
        || name.ends_with(".localhost")
        || name.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Api {
    Deviations,
    Incidents,
    Workloads,
    Agents,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    Asset(&'static str, &'static str),
    Metrics,
    Api(Api),
    NotFound,
    MisdirectedHost,
    BadMethod,
}

fn route(request: &Request, loopback_only: bool) -> Route {
    if !matches!(request.method.as_str(), "GET" | "HEAD") {
        return Route::BadMethod;
    }
    let path = request.path.as_str();
    if path == "/metrics" {
        return Route::Metrics;
    }
    let foreign = loopback_only
        && request
            .host
            .as_deref()
            .is_some_and(|host| !is_loopback_host(host));
    match path {
        "/" | "/index.html" | "/app.js" | "/style.css" | "/api/deviations" | "/api/incidents"
        | "/api/workloads" | "/api/agents"
            if foreign =>
        {
            Route::MisdirectedHost
        }
        "/" | "/index.html" => Route::Asset("text/html; charset=utf-8", INDEX_HTML),
        "/app.js" => Route::Asset("text/javascript; charset=utf-8", APP_JS),
        "/style.css" => Route::Asset("text/css; charset=utf-8", STYLE_CSS),
        "/api/deviations" => Route::Api(Api::Deviations),
        "/api/incidents" => Route::Api(Api::Incidents),
        "/api/workloads" => Route::Api(Api::Workloads),
        "/api/agents" => Route::Api(Api::Agents),
        _ => Route::NotFound,
    }
}

/// The response to every route but the API, which needs the database.
fn respond(route: Route, render_metrics: impl FnOnce() -> String) -> Response {
    let text = "text/plain; charset=utf-8";
    match route {
        Route::Asset(content_type, body) => {
            Response::new(200, "OK", content_type, body.as_bytes().to_vec())
                .header("Content-Security-Policy", PAGE_POLICY)
                .header("Referrer-Policy", "no-referrer")
                .header("Cache-Control", "no-cache")
        }
        Route::Metrics => Response::new(
            200,
            "OK",
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            render_metrics().into_bytes(),
        ),
        Route::Api(_) => error(500, "Internal Server Error", "API route without a handler"),
        Route::NotFound => Response::new(
            404,
            "Not Found",
            text,
            b"not found: the page is at /, metrics at /metrics\n".to_vec(),
        ),
        Route::MisdirectedHost => Response::new(
            421,
            "Misdirected Request",
            text,
            b"this endpoint listens on loopback and answers only requests for localhost or a \
              loopback address\n"
                .to_vec(),
        ),
        Route::BadMethod => Response::new(
            405,
            "Method Not Allowed",
            text,
            b"only GET and HEAD\n".to_vec(),
        )
        .header("Allow", "GET, HEAD"),
    }
}

fn error(status: u16, reason: &'static str, message: &str) -> Response {
    json_response(status, reason, &json!({ "error": message }))
}

fn json_response(status: u16, reason: &'static str, value: &Value) -> Response {
    Response::new(
        status,
        reason,
        "application/json",
        value.to_string().into_bytes(),
    )
    .header("Cache-Control", "no-store")
}

/// Answers an API call (blocking: it reads the database).
fn api_response(web: &Web, api: Api, query: &[(String, String)]) -> Response {
    let request = match filters(query, SystemTime::now()) {
        Ok(request) => request,
        Err(message) => return error(400, "Bad Request", &message),
    };
    match api_json(web, api, &request) {
        Ok(value) => json_response(200, "OK", &value),
        Err(e) => {
            tracing::error!(error = %e, "web query failed");
            error(500, "Internal Server Error", &e.to_string())
        }
    }
}

fn api_json(web: &Web, api: Api, request: &ListDeviationsRequest) -> Result<Value, StoreError> {
    let store = &web.store;
    Ok(match api {
        Api::Deviations => {
            let deviations = store.list(request)?;
            json!({
                "limit": request.limit,
                "deviations": deviations.iter().map(to_json).collect::<Vec<_>>(),
            })
        }
        Api::Incidents => {
            // The answer `Query/ListIncidents` gives, told as `collector incidents --json` tells
            // it; `more` when older incidents matched too (the page shows the newest).
            let answer = crate::incidents::query::answer(
                store,
                &ListIncidentsRequest {
                    filter: Some(request.clone()),
                    deviations_per_incident: 0,
                },
            )?;
            let incidents: Vec<_> = answer
                .incidents
                .into_iter()
                .map(crate::incidents::query::incident)
                .collect();
            json!({
                "limit": request.limit,
                "more": answer.more,
                // Something matching is not in this answer: older incidents, or older
                // deviations of an incident shown.
                "capped": answer.more || incidents.iter().any(|i| i.left_out() > 0),
                "incidents": incidents.iter().map(incident_json).collect::<Vec<_>>(),
            })
        }
        Api::Workloads => json!({
            "limit": request.limit,
            "workloads": store.workloads(request)?.iter().map(workload_json).collect::<Vec<_>>(),
        }),
        Api::Agents => json!({
            "limit": request.limit,
            "connected": web.metrics.agents_connected(),
            "agents": store.agents(request.limit)?.iter().map(agent_json).collect::<Vec<_>>(),
            "events": store
                .agent_events(AGENT_EVENTS_SHOWN)?
                .iter()
                .map(crate::listing::event_json)
                .collect::<Vec<_>>(),
        }),
    })
}

/// The filters in a query string, as a deviations request (`since` relative to `now`).
fn filters(query: &[(String, String)], now: SystemTime) -> Result<ListDeviationsRequest, String> {
    let mut request = ListDeviationsRequest {
        limit: DEFAULT_API_LIMIT,
        ..ListDeviationsRequest::default()
    };
    for (name, value) in query {
        if value.is_empty() {
            continue; // An empty form field is no filter.
        }
        match name.as_str() {
            "workload" => request.workload.clone_from(value),
            "host" => request.host.clone_from(value),
            "kind" => {
                let kind = KindArg::from_str(value, true)
                    .map_err(|_| format!("unknown kind {value:?}"))?;
                request.kind = DeviationKind::from(kind).into();
            }
            "min_severity" => {
                let severity = SeverityArg::from_str(value, true)
                    .map_err(|_| format!("unknown severity {value:?}"))?;
                request.min_severity = Severity::from(severity).into();
            }
            "since" => {
                let ago = humantime::parse_duration(value)
                    .map_err(|_| format!("invalid since {value:?}: expected a duration like 1h"))?;
                request.since_unix_nanos = unix_nanos(now.checked_sub(ago).unwrap_or(now));
            }
            "limit" => {
                request.limit = value
                    .parse::<u32>()
                    .ok()
                    .filter(|&n| n > 0)
                    .ok_or_else(|| format!("invalid limit {value:?}"))?
                    .min(crate::store::MAX_QUERY_LIMIT);
            }
            _ => {} // Unknown parameters (the page's own, like `open`) are not filters.
        }
    }
    Ok(request)
}

fn workload_json(w: &WorkloadSummary) -> Value {
    let [_, info, low, medium, high, critical] = w.by_severity;
    json!({
        "id": w.id,
        "kind": crate::convert::workload_kind_name(w.kind),
        "deviations": w.deviations,
        "by_severity": {
            "info": info, "low": low, "medium": medium, "high": high, "critical": critical,
        },
        "runs": w.runs,
        "hosts": w.hosts,
        "first": rfc3339_nanos(w.first_ns),
        "last": rfc3339_nanos(w.last_ns),
    })
}

fn agent_json(a: &AgentSummary) -> Value {
    json!({
        "agent_id": a.agent_id,
        "batches": a.batches,
        "stored": a.stored,
        "duplicates": a.duplicates,
        "first_contact": rfc3339_nanos(a.first_contact_ns),
        "last_contact": rfc3339_nanos(a.last_contact_ns),
        "silent": a.silent,
        "stalled": a.stalled(),
        "host": a.host,
        "version": a.version,
        "last_heartbeat": (a.last_heartbeat_ns != 0).then(|| rfc3339_nanos(a.last_heartbeat_ns)),
        "dropped": a.dropped_total,
        "spool": a.spool_deviations,
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::store::BatchKey;

    fn request(head: &str) -> Request {
        Request::parse(head.as_bytes())
    }

    fn text(response: &Response) -> String {
        String::from_utf8(response.encode(false)).unwrap()
    }

    #[test]
    fn routes() {
        let get = |path: &str| route(&request(&format!("GET {path} HTTP/1.1\r\n\r\n")), true);
        assert_eq!(get("/metrics"), Route::Metrics);
        assert!(matches!(get("/"), Route::Asset(t, _) if t.starts_with("text/html")));
        assert!(matches!(get("/?workload=x"), Route::Asset(t, _) if t.starts_with("text/html")));
        assert!(matches!(get("/app.js"), Route::Asset(t, _) if t.starts_with("text/javascript")));
        assert_eq!(get("/api/agents?limit=3"), Route::Api(Api::Agents));
        assert_eq!(get("/api/deviations"), Route::Api(Api::Deviations));
        assert_eq!(get("/nothing"), Route::NotFound);
        let put = request("PUT /metrics HTTP/1.1\r\n\r\n");
        assert_eq!(route(&put, false), Route::BadMethod);
    }

    #[test]
    fn a_foreign_host_gets_no_page_on_loopback() {
        let evil = request("GET /api/deviations HTTP/1.1\r\nHost: evil.example:9465\r\n\r\n");
        assert_eq!(route(&evil, true), Route::MisdirectedHost);
        assert_eq!(route(&evil, false), Route::Api(Api::Deviations));
        let scrape = request("GET /metrics HTTP/1.1\r\nhost: evil.example\r\n\r\n");
        assert_eq!(route(&scrape, true), Route::Metrics);
        for host in [
            "127.0.0.1:9465",
            "localhost:9465",
            "LOCALHOST",
            "[::1]:9465",
            "127.1.2.3",
            "a.localhost",
        ] {
            assert!(is_loopback_host(host), "{host}");
        }
        for host in [
            "10.0.0.1:9465",
            "evil.example",
            "[::2]:1",
            "localhost.evil.example",
        ] {
            assert!(!is_loopback_host(host), "{host}");
        }
    }

    #[test]
    fn filters_parse_like_the_command_line() {
        let q = |pairs: &[(&str, &str)]| {
            let pairs: Vec<_> = pairs
                .iter()
                .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
                .collect();
            filters(&pairs, SystemTime::UNIX_EPOCH + Duration::from_secs(7200))
        };
        let r = q(&[
            ("workload", "unit:a.service"),
            ("min_severity", "HIGH"),
            ("kind", "new-dns-name"),
            ("since", "1h"),
            ("limit", "5"),
            ("open", "ignored"),
        ])
        .unwrap();
        assert_eq!(r.workload, "unit:a.service");
        assert_eq!(r.min_severity, Severity::High as i32);
        assert_eq!(r.kind, DeviationKind::NewDnsName as i32);
        assert_eq!(r.since_unix_nanos, 3_600_000_000_000);
        assert_eq!(r.limit, 5);
        assert_eq!(q(&[]).unwrap().limit, DEFAULT_API_LIMIT);
        assert_eq!(q(&[("min_severity", "")]).unwrap().min_severity, 0);
        assert!(
            q(&[("min_severity", "urgent")])
                .unwrap_err()
                .contains("urgent")
        );
        assert!(q(&[("limit", "0")]).is_err());
        assert_eq!(q(&[("limit", "99999999")]).unwrap().limit, 10_000);
    }

    #[test]
    fn responses_carry_their_headers() {
        let page = text(&respond(Route::Asset("text/html", "<p>"), String::new));
        assert!(page.starts_with("HTTP/1.1 200 OK\r\n"), "{page}");
        assert!(
            page.contains("\r\nContent-Security-Policy: default-src 'none'; script-src 'self';")
        );
        assert!(page.contains("\r\nContent-Length: 3\r\n") && page.ends_with("\r\n\r\n<p>"));
        let head =
            String::from_utf8(respond(Route::Metrics, || "a 1\n".into()).encode(true)).unwrap();
        assert!(head.contains("Content-Length: 4\r\n") && head.ends_with("\r\n\r\n"));
        let bad = text(&respond(Route::BadMethod, String::new));
        assert!(bad.starts_with("HTTP/1.1 405 ") && bad.contains("\r\nAllow: GET, HEAD\r\n"));
    }

    #[test]
    fn the_api_answers_from_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(&dir.path().join("c.db")).unwrap());
        let key = BatchKey {
            agent_id: "agent-a",
            spool_id: "s",
            sequence: 1,
        };
        let mut d = crate::convert::tests::deviation("x", 1_700_000_000_000_000_000);
        d.summary = "<script>alert(1)</script>".to_owned();
        store
            .store_batch(key, vec![d], 1_700_000_001_000_000_000)
            .unwrap();
        let web = Web::new(
            store,
            Arc::new(Metrics::new()),
            "127.0.0.1".parse().unwrap(),
        );
        let call = |api, query: &[(&str, &str)]| {
            let query: Vec<_> = query
                .iter()
                .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
                .collect();
            let response = api_response(&web, api, &query);
            let body: Value = serde_json::from_slice(&response.body).unwrap();
            (response.status, body)
        };
        let (status, body) = call(Api::Deviations, &[]);
        assert_eq!(status, 200);
        assert_eq!(
            body["deviations"][0]["summary"],
            "<script>alert(1)</script>"
        );
        assert_eq!(body["deviations"][0]["agent_id"], "agent-a");
        let (_, body) = call(Api::Incidents, &[]);
        assert_eq!(body["incidents"][0]["run_id"], "42");
        assert_eq!(body["incidents"][0]["max_severity"], "high");
        assert_eq!(body["incidents"][0]["kinds"][0], "new-exec-edge");
        let (_, body) = call(Api::Workloads, &[]);
        assert_eq!(body["workloads"][0]["id"], "github:acme/app/ci/build");
        assert_eq!(body["workloads"][0]["kind"], "github-job");
        assert_eq!(body["workloads"][0]["by_severity"]["high"], 1);
        let (_, body) = call(Api::Agents, &[]);
        assert_eq!(body["agents"][0]["agent_id"], "agent-a");
        assert_eq!(
            body["agents"][0]["last_contact"],
            "2023-11-14T22:13:21.000000000Z"
        );
        assert_eq!(body["connected"], 0);
        let (_, body) = call(Api::Workloads, &[("min_severity", "critical")]);
        assert_eq!(body["workloads"].as_array().unwrap().len(), 0);
        let (status, body) = call(Api::Deviations, &[("kind", "nope")]);
        assert_eq!(status, 400);
        assert!(body["error"].as_str().unwrap().contains("nope"));
    }
}
