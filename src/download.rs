//! Download safety for S3 restores (docs/api.md section 8): the URL must be
//! http(s); every address a host name resolves to is checked before
//! connecting, and loopback, private, link-local, CGNAT (100.64/10),
//! benchmark (198.18/15) and other non-global addresses are refused unless
//! the host, address or a network is on `restore_host_allowlist`; at most 10
//! redirects, each checked again. The checks run in the resolver that the
//! connection uses, so the address checked is the address connected to.

use std::io::Read;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs};
use std::time::Duration;

use ureq::http::Uri;
use ureq::unversioned::resolver::{ResolvedSocketAddrs, Resolver};
use ureq::unversioned::transport::{DefaultConnector, NextTimeout};

use crate::config::AllowEntry;
use crate::error::{Error, Result};

const MAX_REDIRECTS: usize = 10;
const BLOCKED: &str = "The provided backup link resolves to a blocked address.";

/// Whether an address is one a download may not reach by default.
pub fn is_blocked(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(a) => blocked_v4(a),
        IpAddr::V6(a) => {
            if let Some(v4) = a.to_ipv4_mapped() {
                return blocked_v4(v4);
            }
            let s = a.segments();
            a.is_loopback()
                || a.is_unspecified()
                || a.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00 // unique local
                || (s[0] & 0xffc0) == 0xfe80 // link-local
                || (s[0] == 0x2001 && s[1] == 0x0db8) // documentation
                || (s[0] == 0x0064 && s[1] == 0xff9b) // NAT64 to IPv4
                || (s[0] == 0x2002) // 6to4
                || (s[0] == 0 && s[1] == 0 && s[2] == 0 && s[3] == 0 && s[4] == 0 && s[5] == 0)
            // IPv4-compatible
        }
    }
}

fn blocked_v4(a: Ipv4Addr) -> bool {
    let o = a.octets();
    a.is_loopback()
        || a.is_private()
        || a.is_link_local()
        || a.is_unspecified()
        || a.is_broadcast()
        || a.is_multicast()
        || a.is_documentation()
        || o[0] == 0
        || o[0] >= 240
        || (o[0] == 100 && (o[1] & 0xc0) == 64) // CGNAT 100.64/10
        || (o[0] == 198 && (o[1] & 0xfe) == 18) // benchmark 198.18/15
        || (o[0] == 192 && o[1] == 0 && o[2] == 0) // IETF protocol assignments
}

fn in_network(ip: IpAddr, net: IpAddr, bits: u8) -> bool {
    match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) => {
            let mask = if bits == 0 {
                0
            } else {
                u32::MAX << (32 - bits)
            };
            (u32::from(a) & mask) == (u32::from(n) & mask)
        }
        (IpAddr::V6(a), IpAddr::V6(n)) => {
            let mask = if bits == 0 {
                0
            } else {
                u128::MAX << (128 - bits)
            };
            (u128::from(a) & mask) == (u128::from(n) & mask)
        }
        _ => false,
    }
}

fn allowed(host: &str, ip: IpAddr, allow: &[AllowEntry]) -> bool {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    allow.iter().any(|entry| match entry {
        AllowEntry::Host(h) => *h == host,
        AllowEntry::Addr(a) => *a == ip,
        AllowEntry::Net(n, bits) => in_network(ip, *n, *bits),
    })
}

fn unbracket(host: &str) -> &str {
    host.trim_start_matches('[').trim_end_matches(']')
}

/// Resolves `host:port` and checks every address.
fn resolve_checked(host: &str, port: u16, allow: &[AllowEntry]) -> Result<Vec<SocketAddr>> {
    let bare = unbracket(host);
    let addrs: Vec<SocketAddr> = match bare.parse::<IpAddr>() {
        Ok(ip) => vec![SocketAddr::new(ip, port)],
        Err(_) => (bare, port)
            .to_socket_addrs()
            .map_err(|e| {
                Error::invalid(format!(
                    "The provided backup link's host cannot be resolved: {e}"
                ))
            })?
            .collect(),
    };
    if addrs.is_empty() {
        return Err(Error::invalid(
            "The provided backup link's host cannot be resolved.",
        ));
    }
    for addr in &addrs {
        if is_blocked(addr.ip()) && !allowed(bare, addr.ip(), allow) {
            return Err(Error::invalid(BLOCKED));
        }
    }
    Ok(addrs)
}

/// A parsed, http(s) URL with its host and port.
struct Target {
    uri: Uri,
    host: String,
    port: u16,
}

/// The scheme `s` starts with, if any (RFC 3986: ALPHA *( ALPHA / DIGIT /
/// "+" / "-" / "." ) ":"); "/p?u=http://x" has none.
fn scheme_of(s: &str) -> Option<&str> {
    let len = s
        .bytes()
        .take_while(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'))
        .count();
    (len > 0 && s.as_bytes()[0].is_ascii_alphabetic() && s.as_bytes().get(len) == Some(&b':'))
        .then(|| &s[..len])
}

/// The first URL and every redirect's alike: a scheme other than http(s)
/// is refused as such, before the URL is parsed (`file:///etc/passwd`,
/// with no authority, would not parse as an HTTP URL).
fn parse(url: &str) -> Result<Target> {
    if let Some(scheme) = scheme_of(url) {
        if !scheme.eq_ignore_ascii_case("http") && !scheme.eq_ignore_ascii_case("https") {
            return Err(Error::invalid(
                "The provided backup link must use HTTP or HTTPS.",
            ));
        }
    }
    let uri: Uri = url
        .parse()
        .map_err(|_| Error::invalid("The provided backup link is not a valid URL."))?;
    let default_port = match uri.scheme_str() {
        Some("http") => 80,
        Some("https") => 443,
        _ => {
            return Err(Error::invalid(
                "The provided backup link must use HTTP or HTTPS.",
            ))
        }
    };
    let host = uri
        .host()
        .filter(|h| !h.is_empty())
        .ok_or_else(|| Error::invalid("The provided backup link is not a valid URL."))?
        .to_string();
    let port = uri.port_u16().unwrap_or(default_port);
    Ok(Target { uri, host, port })
}

/// The checks a restore request gets before it is accepted: the URL parses,
/// is http(s), and its host resolves only to allowed addresses.
pub fn check_url(url: &str, allow: &[AllowEntry]) -> Result<()> {
    let target = parse(url)?;
    resolve_checked(&target.host, target.port, allow).map(|_| ())
}

/// The resolver the download's connections go through.
#[derive(Debug)]
struct CheckedResolver {
    allow: Vec<AllowEntry>,
}

#[derive(Debug)]
struct Refused(Error);

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0.message)
    }
}

impl std::error::Error for Refused {}

impl Resolver for CheckedResolver {
    fn resolve(
        &self,
        uri: &Uri,
        _config: &ureq::config::Config,
        _timeout: NextTimeout,
    ) -> std::result::Result<ResolvedSocketAddrs, ureq::Error> {
        let target =
            parse(&uri.to_string()).map_err(|e| ureq::Error::Other(Box::new(Refused(e))))?;
        let addrs = resolve_checked(&target.host, target.port, &self.allow)
            .map_err(|e| ureq::Error::Other(Box::new(Refused(e))))?;
        let mut out = self.empty();
        for addr in addrs.into_iter().take(16) {
            out.push(addr);
        }
        Ok(out)
    }
}

/// An open download: the body and its length if the server said.
pub struct Download {
    pub reader: Box<dyn Read + Send>,
    pub len: Option<u64>,
}

/// A body reader whose failures are remote errors (a download that breaks
/// off is the storage's fault, not a corrupt archive or a local I/O error).
struct BodyReader(ureq::BodyReader<'static>);

impl Read for BodyReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.0.read(buf).map_err(|e| {
            std::io::Error::other(Error::remote(format!("the download broke off: {e}")))
        })
    }
}

/// A reader whose reads happen on a thread of their own, so that the
/// restore never waits on the network: a read that finds nothing within
/// `Detached::WAIT` answers `WouldBlock`, and the caller may ask again or,
/// cancelled, give up at once. The thread ends at the body's end, at an
/// error, or at its next read after the `Detached` is dropped (a stalled
/// server holds it until the read timeout). At most `DEPTH` chunks wait.
struct Detached {
    chunks: std::sync::mpsc::Receiver<std::io::Result<Vec<u8>>>,
    current: Vec<u8>,
    pos: usize,
    ended: bool,
}

impl Detached {
    const WAIT: Duration = Duration::from_millis(100);
    const DEPTH: usize = 8;
    const CHUNK: usize = 64 * 1024;

    fn spawn(mut inner: impl Read + Send + 'static) -> Result<Detached> {
        let (tx, rx) = std::sync::mpsc::sync_channel(Self::DEPTH);
        std::thread::Builder::new()
            .name("wb-download".into())
            .spawn(move || loop {
                let mut buf = vec![0u8; Self::CHUNK];
                match inner.read(&mut buf) {
                    Ok(n) => {
                        buf.truncate(n);
                        // An empty chunk is the end of the body.
                        if tx.send(Ok(buf)).is_err() || n == 0 {
                            return;
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        let _ = tx.send(Err(e));
                        return;
                    }
                }
            })
            .map_err(|e| Error::io("starting the download", e))?;
        Ok(Detached {
            chunks: rx,
            current: Vec::new(),
            pos: 0,
            ended: false,
        })
    }
}

impl Read for Detached {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        use std::sync::mpsc::RecvTimeoutError;
        while self.pos >= self.current.len() {
            if self.ended {
                return Ok(0);
            }
            match self.chunks.recv_timeout(Self::WAIT) {
                Ok(Ok(chunk)) => {
                    self.ended = chunk.is_empty();
                    self.current = chunk;
                    self.pos = 0;
                }
                Ok(Err(e)) => return Err(e),
                Err(RecvTimeoutError::Timeout) => return Err(std::io::ErrorKind::WouldBlock.into()),
                Err(RecvTimeoutError::Disconnected) => {
                    return Err(std::io::Error::other(Error::remote(
                        "the download stopped unexpectedly",
                    )))
                }
            }
        }
        let n = buf.len().min(self.current.len() - self.pos);
        buf[..n].copy_from_slice(&self.current[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

fn redirect_target(current: &Uri, location: &str) -> Result<String> {
    // Absolute when it starts with a scheme; "/p?u=http://x" is a path.
    if scheme_of(location).is_some() {
        return Ok(location.to_string());
    }
    let scheme = current.scheme_str().unwrap_or("https");
    let authority = current.authority().map(|a| a.as_str()).unwrap_or("");
    if let Some(rest) = location.strip_prefix("//") {
        return Ok(format!("{scheme}://{rest}"));
    }
    if location.starts_with('/') {
        return Ok(format!("{scheme}://{authority}{location}"));
    }
    let path = current.path();
    let dir = &path[..path.rfind('/').map_or(0, |i| i + 1)];
    Ok(format!("{scheme}://{authority}{dir}{location}"))
}

/// Opens `url` for streaming, after the checks of section 6.1: status 200
/// and a gzip Content-Type, or an invalid-argument error with Wings'
/// messages.
pub fn open(url: &str, allow: &[AllowEntry]) -> Result<Download> {
    let response = fetch(url, allow, None)?;
    whole(response)
}

/// What a request for a range of the object got.
pub enum Ranged {
    /// `206 Partial Content` with exactly the bytes asked for.
    Partial(Box<dyn Read + Send>),
    /// `200 OK` with the whole object: the server ignores ranges.
    Whole(Download),
}

/// Asks for bytes `[start, start + len)` of the object at `url` (with the
/// same checks as `open`). A 206 answer must name exactly that range in
/// its `Content-Range`; a 200 answer is the whole object, for the caller
/// to stream instead. `total` is the object's expected length.
pub fn open_range(
    url: &str,
    allow: &[AllowEntry],
    start: u64,
    len: u64,
    total: u64,
) -> Result<Ranged> {
    if len == 0 {
        return Err(Error::internal("an empty range"));
    }
    let end = start + len - 1;
    let response = fetch(url, allow, Some((start, end)))?;
    if response.status().as_u16() == 200 {
        return whole(response).map(Ranged::Whole);
    }
    if response.status().as_u16() != 206 {
        return whole(response).map(Ranged::Whole);
    }
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).trim().to_string())
    };
    let range = header("content-range").unwrap_or_default();
    let expected = format!("bytes {start}-{end}/{total}");
    if range != expected {
        return Err(Error::remote(format!(
            "the backup link answered a request for bytes {start}-{end} with the range {}",
            crate::error::quote_str(&range)
        )));
    }
    if let Some(n) = header("content-length").and_then(|v| v.parse::<u64>().ok()) {
        if n != len {
            return Err(Error::remote(format!(
                "the backup link answered a request for {len} bytes with {n}"
            )));
        }
    }
    let reader = response.into_body().into_reader();
    Ok(Ranged::Partial(Box::new(
        Detached::spawn(BodyReader(reader))?.take(len),
    )))
}

/// The response to a GET of `url` (with a `Range` header when `range` is
/// given, inclusive), redirects followed and each checked.
fn fetch(
    url: &str,
    allow: &[AllowEntry],
    range: Option<(u64, u64)>,
) -> Result<ureq::http::Response<ureq::Body>> {
    let config = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .timeout_connect(Some(Duration::from_secs(30)))
        .timeout_recv_response(Some(Duration::from_secs(30)))
        .timeout_per_read(Some(Duration::from_secs(120)))
        .proxy(None)
        .user_agent(concat!("wings-backup/", env!("CARGO_PKG_VERSION")))
        .build();
    let agent = ureq::Agent::with_parts(
        config,
        DefaultConnector::new(),
        CheckedResolver {
            allow: allow.to_vec(),
        },
    );
    let mut current = url.to_string();
    for _ in 0..=MAX_REDIRECTS {
        let target = parse(&current)?;
        let mut request = agent.get(&current);
        if let Some((a, b)) = range {
            request = request.header("Range", format!("bytes={a}-{b}"));
        }
        let response = request.call().map_err(|e| match e {
            ureq::Error::Other(inner) => match inner.downcast::<Refused>() {
                Ok(refused) => refused.0,
                Err(other) => Error::remote(format!("downloading the backup: {other}")),
            },
            e => Error::remote(format!("downloading the backup: {e}")),
        })?;
        let status = response.status();
        if status.is_redirection() {
            let location = response
                .headers()
                .get("location")
                .and_then(|v| v.to_str().ok())
                .ok_or_else(|| Error::remote("the backup link redirects without a Location"))?;
            current = redirect_target(&target.uri, location)?;
            continue;
        }
        return Ok(response);
    }
    Err(Error::invalid(
        "The provided backup link redirects too many times.",
    ))
}

/// The checks of a whole-object answer: status 200 and a gzip type.
fn whole(response: ureq::http::Response<ureq::Body>) -> Result<Download> {
    let status = response.status();
    if status.as_u16() != 200 {
        return Err(Error::invalid(
            format!(
                "The provided backup link returned an invalid response status: {} {}",
                status.as_u16(),
                status.canonical_reason().unwrap_or("")
            )
            .trim_end()
            .to_string(),
        ));
    }
    let content_type = response
        .headers()
        .get("content-type")
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .unwrap_or_default();
    let media = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if media != "application/gzip" && media != "application/x-gzip" {
        return Err(Error::invalid(format!(
            "The provided backup link is not a supported content type. \"{content_type}\" is not application/x-gzip."
        )));
    }
    let len = response
        .headers()
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    let reader = response.into_body().into_reader();
    Ok(Download {
        reader: Box::new(Detached::spawn(BodyReader(reader))?),
        len,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocked_ranges() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "100.127.255.255",
            "198.18.0.1",
            "198.19.255.255",
            "0.0.0.0",
            "255.255.255.255",
            "224.0.0.1",
            "::1",
            "::",
            "fc00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "64:ff9b::7f00:1",
        ] {
            assert!(is_blocked(ip.parse().unwrap()), "{ip}");
        }
        for ip in [
            "8.8.8.8",
            "1.1.1.1",
            "100.128.0.1",
            "198.20.0.1",
            "2606:4700::1111",
        ] {
            assert!(!is_blocked(ip.parse().unwrap()), "{ip}");
        }
    }

    #[test]
    fn allowlist_entries() {
        let allow = vec![
            AllowEntry::parse("minio.local").unwrap(),
            AllowEntry::parse("10.0.0.0/8").unwrap(),
            AllowEntry::parse("127.0.0.1").unwrap(),
        ];
        assert!(allowed(
            "MINIO.local.",
            "192.168.1.5".parse().unwrap(),
            &allow
        ));
        assert!(allowed("x", "10.9.8.7".parse().unwrap(), &allow));
        assert!(allowed("x", "127.0.0.1".parse().unwrap(), &allow));
        assert!(!allowed("x", "127.0.0.2".parse().unwrap(), &allow));
    }

    #[test]
    fn url_checks() {
        let none: Vec<AllowEntry> = Vec::new();
        for (url, part) in [
            ("ftp://example.com/x", "HTTP or HTTPS"),
            ("file:///etc/passwd", "HTTP or HTTPS"),
            ("FILE:/etc/passwd", "HTTP or HTTPS"),
            ("gopher://127.0.0.1:70/x", "HTTP or HTTPS"),
            ("not a url", "not a valid URL"),
            ("http://127.0.0.1:9000/b", "blocked"),
            ("http://[::1]/b", "blocked"),
            ("http://localhost/b", "blocked"),
            ("http://169.254.169.254/latest", "blocked"),
        ] {
            let err = check_url(url, &none).unwrap_err();
            assert_eq!(err.status, crate::Status::InvalidArgument);
            assert!(err.message.contains(part), "{url}: {}", err.message);
        }
        let allow = vec![AllowEntry::parse("127.0.0.0/8").unwrap()];
        check_url("http://127.0.0.1:9000/b", &allow).unwrap();
    }

    #[test]
    fn redirects_resolve_against_the_current_url() {
        let base: Uri = "https://s3.example.com/bucket/a/b.tar.gz?x=1"
            .parse()
            .unwrap();
        assert_eq!(
            redirect_target(&base, "https://other/x").unwrap(),
            "https://other/x"
        );
        assert_eq!(
            redirect_target(&base, "/y").unwrap(),
            "https://s3.example.com/y"
        );
        assert_eq!(
            redirect_target(&base, "c.tar.gz").unwrap(),
            "https://s3.example.com/bucket/a/c.tar.gz"
        );
        assert_eq!(redirect_target(&base, "//cdn/z").unwrap(), "https://cdn/z");
        assert_eq!(
            redirect_target(&base, "/p?u=http://x").unwrap(),
            "https://s3.example.com/p?u=http://x"
        );
        assert_eq!(
            redirect_target(&base, "HTTP://Other/x").unwrap(),
            "HTTP://Other/x"
        );
    }
}
