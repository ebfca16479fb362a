//! A minimal HTTP/1.1 responder on a tokio listener: one request head per connection, one answer,
//! then close.
//!
//! Not hyper or axum: the endpoint answers a few GETs to a browser or a scraper, and the hyper and
//! axum in the tree are built (for tonic) without their HTTP/1 server features; enabling them
//! would compile a general HTTP stack for that. Each connection gets one answer and is closed
//! (`Connection: close`, which browsers and Prometheus handle); request heads over 8 KiB or slower
//! than 5 s are dropped; at most 8 connections are answered at once. (The sensor has the same
//! responder for its metrics; the two crates share no library.)

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// Largest request head read.
const MAX_REQUEST: usize = 8 * 1024;
/// How long a client gets to send its request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections answered at once; more wait to be accepted.
const MAX_CONNECTIONS: usize = 8;

/// Answers every connection on `listener` with `handle` until `cancel` fires.
pub async fn serve<F, Fut>(listener: TcpListener, cancel: CancellationToken, handle: F)
where
    F: Fn(Request) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = Response> + Send,
{
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(permit) = Arc::clone(&slots).acquire_owned().await else {
            return;
        };
        let stream = tokio::select! {
            () = cancel.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::warn!(error = %e, "http: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let handle = handle.clone();
        tokio::spawn(async move {
            let _permit = permit;
            if let Err(e) = answer(stream, handle).await {
                tracing::debug!(error = %e, "http: request failed");
            }
        });
    }
}

/// Reads one request head and answers it.
async fn answer<F, Fut>(mut stream: TcpStream, handle: F) -> std::io::Result<()>
where
    F: Fn(Request) -> Fut,
    Fut: Future<Output = Response>,
{
    let mut head = Vec::with_capacity(512);
    let read = async {
        let mut buf = [0u8; 1024];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < MAX_REQUEST {
            let n = stream.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            head.extend_from_slice(&buf[..n]);
        }
        Ok::<_, std::io::Error>(())
    };
    tokio::time::timeout(REQUEST_TIMEOUT, read)
        .await
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
    let request = Request::parse(&head);
    let head_only = request.method == "HEAD";
    let response = handle(request).await;
    stream.write_all(&response.encode(head_only)).await?;
    stream.shutdown().await
}

/// The parts of a request head the endpoint looks at.
#[derive(Debug, Default)]
pub struct Request {
    pub method: String,
    pub path: String,
    /// Decoded `name=value` pairs of the query string, in order.
    pub query: Vec<(String, String)>,
    /// The `Host` header, when sent.
    pub host: Option<String>,
    /// The `Authorization` header, when sent.
    pub authorization: Option<String>,
}

impl Request {
    pub fn parse(head: &[u8]) -> Request {
        let text = String::from_utf8_lossy(head);
        let mut lines = text.split("\r\n");
        let mut parts = lines.next().unwrap_or_default().split_whitespace();
        let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        let headers: Vec<(&str, &str)> = lines
            .take_while(|l| !l.is_empty())
            .filter_map(|l| l.split_once(':'))
            .collect();
        let header = |wanted: &str| {
            headers
                .iter()
                .find(|(name, _)| name.trim().eq_ignore_ascii_case(wanted))
                .map(|(_, value)| value.trim().to_owned())
        };
        let host = header("host");
        let authorization = header("authorization");
        Request {
            method: method.to_owned(),
            path: path.to_owned(),
            query: query
                .split('&')
                .filter(|p| !p.is_empty())
                .map(|p| {
                    let (name, value) = p.split_once('=').unwrap_or((p, ""));
                    (form_decode(name), form_decode(value))
                })
                .collect(),
            host,
            authorization,
        }
    }
}

/// Decodes one `application/x-www-form-urlencoded` component (`+` is a space, `%XX` a byte; a
/// `%` not followed by two hex digits stays as it is).
fn form_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .filter(|h| h.iter().all(u8::is_ascii_hexdigit));
                match hex.and_then(|h| u8::from_str_radix(std::str::from_utf8(h).ok()?, 16).ok()) {
                    Some(byte) => {
                        out.push(byte);
                        i += 3;
                        continue;
                    }
                    None => out.push(b'%'),
                }
            }
            other => out.push(other),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A whole response.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub reason: &'static str,
    pub content_type: &'static str,
    /// Extra header lines, each ending in CRLF.
    headers: String,
    pub body: Vec<u8>,
}

impl Response {
    pub fn new(
        status: u16,
        reason: &'static str,
        content_type: &'static str,
        body: Vec<u8>,
    ) -> Self {
        Response {
            status,
            reason,
            content_type,
            headers: String::new(),
            body,
        }
    }

    /// Adds a header line.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push_str(&format!("{name}: {value}\r\n"));
        self
    }

    /// The bytes sent: status line, headers and, unless `head_only`, the body.
    pub fn encode(&self, head_only: bool) -> Vec<u8> {
        let mut out = format!(
            "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\n\
             X-Content-Type-Options: nosniff\r\n{}Connection: close\r\n\r\n",
            self.status,
            self.reason,
            self.content_type,
            self.body.len(),
            self.headers
        )
        .into_bytes();
        if !head_only {
            out.extend_from_slice(&self.body);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_heads_parse() {
        let r = Request::parse(
            b"GET /api/x?workload=github%3Aacme%2Fapp+x&min_severity=&bad=%zz HTTP/1.1\r\n\
              User-Agent: t\r\nhost: localhost:9465\r\n\r\n",
        );
        assert_eq!((r.method.as_str(), r.path.as_str()), ("GET", "/api/x"));
        assert_eq!(
            r.query,
            [
                ("workload".to_owned(), "github:acme/app x".to_owned()),
                ("min_severity".to_owned(), String::new()),
                ("bad".to_owned(), "%zz".to_owned()),
            ]
        );
        assert_eq!(r.host.as_deref(), Some("localhost:9465"));
        let bare = Request::parse(b"GET / HTTP/1.0\r\n\r\n");
        assert_eq!((bare.path.as_str(), bare.host), ("/", None));
        assert_eq!(Request::parse(b"").method, "");
    }

    #[test]
    fn form_components_decode() {
        assert_eq!(form_decode("%"), "%");
        assert_eq!(form_decode("a%2"), "a%2");
        assert_eq!(form_decode("%+1"), "% 1");
        assert_eq!(form_decode("%C3%A9"), "é");
    }

    #[test]
    fn responses_encode() {
        let ok = Response::new(200, "OK", "text/plain", b"a 1\n".to_vec()).header("Allow", "GET");
        let full = String::from_utf8(ok.encode(false)).unwrap();
        assert!(full.starts_with("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"));
        assert!(full.contains("\r\nContent-Length: 4\r\n") && full.contains("\r\nAllow: GET\r\n"));
        assert!(full.ends_with("Connection: close\r\n\r\na 1\n"), "{full}");
        let head = String::from_utf8(ok.encode(true)).unwrap();
        assert!(head.contains("Content-Length: 4\r\n") && head.ends_with("\r\n\r\n"));
    }
}
