//! Where a request comes from, and which browsers may call us.
//!
//! - [`TrustedProxies`] + [`client_ip`]: the client address, believing `X-Forwarded-For` only
//!   when the TCP peer is one of our own proxies (`GATEHOUSE_TRUSTED_PROXIES`).
//! - [`ClientIp`]: the same as an axum extractor; [`layer`] makes the proxy list reachable.
//! - [`allowed`]: per-tenant / per-key IP allowlists.
//! - [`cors_layer`]: the CORS policy (`GATEHOUSE_CORS_ORIGINS`).
//!
//! Addresses are compared and returned in canonical form: an IPv4-mapped IPv6 address
//! (`::ffff:192.0.2.1`, as a dual-stack socket reports IPv4 peers) is the IPv4 address
//! (`192.0.2.1`), so allowlists, proxy lists, throttling keys and audit rows see one
//! spelling per client.

use std::{
    convert::Infallible,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    sync::{Arc, Once},
    time::Duration,
};

use axum::{
    Extension,
    extract::{ConnectInfo, FromRequestParts},
    http::{HeaderMap, HeaderName, HeaderValue, Method, header, request::Parts},
};
use ipnet::{IpNet, Ipv4Net};
use tower_http::cors::{AllowOrigin, CorsLayer};

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// The proxies (load balancers, ingress) whose `X-Forwarded-For` we believe.
///
/// Empty (the default) means none: the TCP peer is the client and `X-Forwarded-For` is
/// ignored, which is the only safe choice when the api is reachable directly.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies(Vec<IpNet>);

impl TrustedProxies {
    /// Parses `GATEHOUSE_TRUSTED_PROXIES` entries: CIDRs (`10.0.0.0/8`, `fd00::/8`) or bare
    /// addresses (`10.0.0.7` = `/32`, `fd00::7` = `/128`). Empty entries are skipped.
    pub fn parse(cidrs: &[String]) -> Result<Self, String> {
        let mut nets = Vec::with_capacity(cidrs.len());
        for raw in cidrs {
            let entry = raw.trim();
            if entry.is_empty() {
                continue;
            }
            let net = entry
                .parse::<IpNet>()
                .or_else(|_| entry.parse::<IpAddr>().map(IpNet::from))
                .map_err(|_| {
                    format!(
                        "invalid GATEHOUSE_TRUSTED_PROXIES entry `{entry}`: expected a CIDR \
                         (e.g. 10.0.0.0/8) or an IP address"
                    )
                })?;
            nets.push(canonical_net(net.trunc()));
        }
        Ok(Self(nets))
    }

    /// The parsed networks.
    pub fn nets(&self) -> &[IpNet] {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether `ip` (in any spelling) is one of our proxies.
    pub fn contains(&self, ip: IpAddr) -> bool {
        in_nets(ip, &self.0)
    }
}

/// `ip` with an IPv4-mapped IPv6 address turned into its IPv4 address.
fn canonical(ip: IpAddr) -> IpAddr {
    ip.to_canonical()
}

/// `net` with an IPv4-mapped IPv6 network (`::ffff:10.0.0.0/104`) turned into IPv4.
fn canonical_net(net: IpNet) -> IpNet {
    if let IpNet::V6(v6) = net
        && let Some(v4) = v6.addr().to_ipv4_mapped()
        && v6.prefix_len() >= 96
        && let Ok(v4net) = Ipv4Net::new(v4, v6.prefix_len() - 96)
    {
        return IpNet::V4(v4net);
    }
    net
}

fn in_nets(ip: IpAddr, nets: &[IpNet]) -> bool {
    let canon = canonical(ip);
    nets.iter().any(|net| {
        let net = canonical_net(*net);
        net.contains(&canon) || net.contains(&ip)
    })
}

/// One `X-Forwarded-For` element: an address, optionally with a port as some proxies add
/// (`192.0.2.1:4711`, `[2001:db8::1]:4711`). Anything else (`unknown`, obfuscated
/// identifiers, empty elements, junk) is `None`.
fn parse_hop(raw: &str) -> Option<IpAddr> {
    let hop = raw.trim();
    hop.parse::<IpAddr>()
        .ok()
        .or_else(|| hop.parse::<SocketAddr>().ok().map(|s| s.ip()))
}

/// The client's address.
///
/// - The TCP `peer` is not a trusted proxy: the peer is the client, and `X-Forwarded-For` is
///   ignored entirely — anyone can send that header, so believing it from an arbitrary peer
///   would let a client pick its own address (and so dodge IP throttling and allowlists).
/// - The peer is trusted: `X-Forwarded-For` (every instance of the header, in order, each a
///   comma-separated list) is walked from the right, i.e. from the hop our proxy appended.
///   Addresses of trusted proxies are skipped; the first untrusted one is the client. A
///   malformed element stops the walk and the last good hop is returned — a value we cannot
///   parse is never believed, nor anything to its left (which the same untrusted party may
///   have written). If every hop is a trusted proxy, the leftmost one is returned.
///
/// The result is canonical (IPv4-mapped IPv6 → IPv4).
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &TrustedProxies) -> IpAddr {
    let mut current = canonical(peer);
    if !trusted.contains(current) {
        return current;
    }
    let mut hops: Vec<&str> = Vec::new();
    for value in headers.get_all(&X_FORWARDED_FOR) {
        match value.to_str() {
            Ok(list) => hops.extend(list.split(',')),
            // Non-visible-ASCII bytes: this and every later (more rightward) element are
            // suspect; keep what came before and mark the garbage so the walk stops here.
            Err(_) => hops.push(""),
        }
    }
    for raw in hops.iter().rev() {
        let Some(hop) = parse_hop(raw) else {
            return current;
        };
        current = canonical(hop);
        if !trusted.contains(current) {
            return current;
        }
    }
    current
}

/// Whether `ip` may call under `allowlist` (a tenant's or key's networks). Empty allows
/// every address. IPv4-mapped IPv6 addresses are matched as their IPv4 address, so a
/// dual-stack listener cannot be used to slip past an IPv4 allowlist (or be locked out of it).
pub fn allowed(ip: IpAddr, allowlist: &[IpNet]) -> bool {
    allowlist.is_empty() || in_nets(ip, allowlist)
}

/// The peer assumed when the connection's address is unknown (no `ConnectInfo`).
const UNKNOWN_PEER: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// The client address of a request, per [`client_ip`].
///
/// Reads the TCP peer from `ConnectInfo<SocketAddr>` (present when the server is started with
/// `into_make_service_with_connect_info::<SocketAddr>()`) and the trusted proxies from the
/// `Arc<TrustedProxies>` extension installed by [`layer`].
///
/// Fallbacks, both logged once as a warning since they are wiring mistakes in production:
/// - no `ConnectInfo` (e.g. tests driving the router with `oneshot`): the peer is taken to be
///   `127.0.0.1`;
/// - no [`layer`]: no proxy is trusted (the safe direction — `X-Forwarded-For` is ignored).
///
/// Never rejects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientIp(pub IpAddr);

impl<S> FromRequestParts<S> for ClientIp
where
    S: Send + Sync,
{
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        static NO_PEER: Once = Once::new();
        static NO_LAYER: Once = Once::new();
        let peer = match parts.extensions.get::<ConnectInfo<SocketAddr>>() {
            Some(ConnectInfo(addr)) => addr.ip(),
            None => {
                NO_PEER.call_once(|| {
                    tracing::warn!(
                        "no ConnectInfo<SocketAddr> on the request: client addresses default \
                         to 127.0.0.1 (serve with into_make_service_with_connect_info)"
                    );
                });
                UNKNOWN_PEER
            }
        };
        let ip = match parts.extensions.get::<Arc<TrustedProxies>>() {
            Some(trusted) => client_ip(peer, &parts.headers, trusted),
            None => {
                NO_LAYER.call_once(|| {
                    tracing::warn!(
                        "network::layer is not installed: no proxy is trusted, \
                         X-Forwarded-For is ignored"
                    );
                });
                client_ip(peer, &parts.headers, &TrustedProxies::default())
            }
        };
        Ok(ClientIp(ip))
    }
}

/// The layer that makes `trusted` reachable by [`ClientIp`] (as an `Arc<TrustedProxies>`
/// request extension). Install it on the router: `router.layer(network::layer(trusted))`.
pub fn layer(trusted: TrustedProxies) -> Extension<Arc<TrustedProxies>> {
    Extension(Arc::new(trusted))
}

const CORS_VAR: &str = "GATEHOUSE_CORS_ORIGINS";

fn cors_error(origin: &str, why: &str) -> String {
    format!("invalid {CORS_VAR} entry `{origin}`: {why}")
}

/// Validates one configured origin: exactly `scheme://host[:port]`, spelled as a browser
/// sends it in `Origin` (lowercase, no default port, no path or trailing slash), since the
/// comparison is byte-for-byte.
fn parse_origin(origin: &str) -> Result<HeaderValue, String> {
    const SHAPE: &str = "expected scheme://host[:port], e.g. https://app.example.com";
    if origin == "*" || origin.eq_ignore_ascii_case("null") {
        return Err(cors_error(
            origin,
            "wildcards and `null` are not allowed; list exact origins",
        ));
    }
    let (scheme, authority) = origin
        .split_once("://")
        .ok_or_else(|| cors_error(origin, SHAPE))?;
    let scheme_ok = scheme.starts_with(|c: char| c.is_ascii_lowercase())
        && scheme
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '+' | '-' | '.'));
    if !scheme_ok {
        return Err(cors_error(
            origin,
            "the scheme must be lowercase, e.g. https",
        ));
    }
    if authority.is_empty() {
        return Err(cors_error(origin, SHAPE));
    }
    if authority.contains(['/', '?', '#']) {
        return Err(cors_error(
            origin,
            "an origin has no path, query or trailing slash",
        ));
    }
    if authority.contains('@') {
        return Err(cors_error(origin, "an origin has no user information"));
    }
    let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
        let (literal, after) = rest
            .split_once(']')
            .ok_or_else(|| cors_error(origin, SHAPE))?;
        if literal.parse::<Ipv6Addr>().is_err() {
            return Err(cors_error(origin, "invalid IPv6 address"));
        }
        if literal.chars().any(|c| c.is_ascii_uppercase()) {
            return Err(cors_error(origin, "the host must be lowercase"));
        }
        match after {
            "" => (authority, None),
            _ => match after.strip_prefix(':') {
                Some(port) => (&authority[..authority.len() - after.len()], Some(port)),
                None => return Err(cors_error(origin, SHAPE)),
            },
        }
    } else {
        match authority.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    if !host.starts_with('[') {
        let labels_ok = !host.is_empty()
            && host.split('.').all(|label| {
                !label.is_empty() && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            });
        if !labels_ok {
            return Err(cors_error(origin, "invalid host name"));
        }
        if host.chars().any(|c| c.is_ascii_uppercase()) {
            return Err(cors_error(
                origin,
                "the host must be lowercase, as browsers send it",
            ));
        }
    }
    if let Some(port) = port {
        let number =
            (!port.is_empty() && port.len() <= 5 && port.bytes().all(|b| b.is_ascii_digit()))
                .then(|| port.parse::<u16>().ok())
                .flatten()
                .filter(|p| *p != 0)
                .ok_or_else(|| cors_error(origin, "the port must be a number from 1 to 65535"))?;
        if (scheme == "https" && number == 443) || (scheme == "http" && number == 80) {
            return Err(cors_error(
                origin,
                "omit the default port: browsers do not send it in Origin",
            ));
        }
    }
    HeaderValue::from_str(origin).map_err(|_| cors_error(origin, SHAPE))
}

/// The CORS policy from `GATEHOUSE_CORS_ORIGINS`.
///
/// `None` when no origin is configured: no CORS headers at all, so browsers refuse every
/// cross-origin call (the right default for a server-to-server API).
///
/// Otherwise an exact origin allowlist — never a wildcard — with methods GET, POST, PATCH,
/// DELETE, OPTIONS; request headers `authorization`, `content-type`, `idempotency-key`;
/// exposed response headers `x-request-id` and `location`; preflights cached 600 s.
/// Credentials (cookies) are not allowed: the API authenticates with bearer tokens, which
/// a page must attach explicitly, so ambient credentials are never needed.
///
/// Install it outermost so preflights are answered before authentication.
pub fn cors_layer(origins: &[String]) -> Result<Option<CorsLayer>, String> {
    let mut allowed = Vec::with_capacity(origins.len());
    for raw in origins {
        let origin = raw.trim();
        if origin.is_empty() {
            continue;
        }
        let value = parse_origin(origin)?;
        if !allowed.contains(&value) {
            allowed.push(value);
        }
    }
    if allowed.is_empty() {
        return Ok(None);
    }
    Ok(Some(
        CorsLayer::new()
            .allow_origin(AllowOrigin::list(allowed))
            .allow_methods([
                Method::GET,
                Method::POST,
                Method::PATCH,
                Method::DELETE,
                Method::OPTIONS,
            ])
            .allow_headers([
                header::AUTHORIZATION,
                header::CONTENT_TYPE,
                HeaderName::from_static("idempotency-key"),
            ])
            .expose_headers([HeaderName::from_static("x-request-id"), header::LOCATION])
            .max_age(Duration::from_secs(600))
            .allow_credentials(false),
    ))
}

#[cfg(test)]
mod tests {
    use axum::{Router, body::Body, http::Request, routing::get};
    use tower::ServiceExt;

    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn trusted(list: &[&str]) -> TrustedProxies {
        TrustedProxies::parse(&list.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
    }

    fn xff(values: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for v in values {
            headers.append(X_FORWARDED_FOR, HeaderValue::from_str(v).unwrap());
        }
        headers
    }

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    #[test]
    fn parse_trusted_proxies() {
        let t = trusted(&["10.0.0.0/8", "192.0.2.7", "fd00::/8", " 2001:db8::1 ", ""]);
        assert_eq!(
            t.nets(),
            &nets(&["10.0.0.0/8", "192.0.2.7/32", "fd00::/8", "2001:db8::1/128"])[..]
        );
        // Host bits are dropped.
        assert_eq!(trusted(&["10.1.2.3/8"]).nets(), &nets(&["10.0.0.0/8"])[..]);
        assert!(TrustedProxies::parse(&[]).unwrap().is_empty());
        for bad in ["10.0.0.0/33", "not-an-ip", "10.0.0", "*", "fd00::/129"] {
            let err = TrustedProxies::parse(&["10.0.0.1".into(), bad.into()]).unwrap_err();
            assert!(err.contains("GATEHOUSE_TRUSTED_PROXIES"), "{err}");
            assert!(err.contains(bad), "{err}");
        }
    }

    #[test]
    fn spoofed_xff_from_untrusted_peer_is_ignored() {
        let t = trusted(&["10.0.0.0/8"]);
        let h = xff(&["203.0.113.9"]);
        assert_eq!(client_ip(ip("198.51.100.4"), &h, &t), ip("198.51.100.4"));
        // No trusted proxies at all: the header never counts.
        assert_eq!(
            client_ip(ip("10.0.0.1"), &h, &TrustedProxies::default()),
            ip("10.0.0.1")
        );
    }

    #[test]
    fn trusted_proxy_without_header_is_the_client() {
        let t = trusted(&["10.0.0.0/8"]);
        assert_eq!(
            client_ip(ip("10.0.0.1"), &HeaderMap::new(), &t),
            ip("10.0.0.1")
        );
    }

    #[test]
    fn trusted_proxy_chain() {
        let t = trusted(&["10.0.0.0/8"]);
        // The client prepended a forged entry; our proxy appended the real address.
        let h = xff(&["1.1.1.1, 203.0.113.9"]);
        assert_eq!(client_ip(ip("10.0.0.1"), &h, &t), ip("203.0.113.9"));
    }

    #[test]
    fn multiple_proxies_and_header_instances() {
        let t = trusted(&["10.0.0.0/8", "192.0.2.0/24"]);
        // client → CDN (192.0.2.5) → LB (10.0.0.2) → api; each hop appended its peer.
        let h = xff(&["6.6.6.6, 203.0.113.9, 192.0.2.5", "10.0.0.2"]);
        assert_eq!(client_ip(ip("10.0.0.1"), &h, &t), ip("203.0.113.9"));
        // Same list in a single header.
        let h = xff(&["6.6.6.6,203.0.113.9 ,192.0.2.5,10.0.0.2"]);
        assert_eq!(client_ip(ip("10.0.0.1"), &h, &t), ip("203.0.113.9"));
        // An untrusted hop in the middle stops the walk there.
        let h = xff(&["203.0.113.9, 198.51.100.1, 10.0.0.2"]);
        assert_eq!(client_ip(ip("10.0.0.1"), &h, &t), ip("198.51.100.1"));
    }

    #[test]
    fn all_hops_trusted_gives_leftmost() {
        let t = trusted(&["10.0.0.0/8"]);
        let h = xff(&["10.0.0.9, 10.0.0.8"]);
        assert_eq!(client_ip(ip("10.0.0.1"), &h, &t), ip("10.0.0.9"));
    }

    #[test]
    fn garbage_entries_stop_the_walk() {
        let t = trusted(&["10.0.0.0/8"]);
        // Garbage right after the peer: the peer itself is the last good hop.
        for junk in [
            "unknown",
            "_hidden",
            "",
            "1.2.3",
            "300.1.1.1",
            "evil.example",
        ] {
            let h = xff(&[&format!("203.0.113.9, {junk}")]);
            assert_eq!(
                client_ip(ip("10.0.0.1"), &h, &t),
                ip("10.0.0.1"),
                "{junk:?}"
            );
        }
        // Garbage after a trusted hop: that hop.
        let h = xff(&["203.0.113.9, garbage, 10.0.0.2"]);
        assert_eq!(client_ip(ip("10.0.0.1"), &h, &t), ip("10.0.0.2"));
        // Garbage left of the client does not matter.
        let h = xff(&["garbage, 203.0.113.9"]);
        assert_eq!(client_ip(ip("10.0.0.1"), &h, &t), ip("203.0.113.9"));
        // Non-ASCII header bytes count as garbage.
        let mut h = xff(&["203.0.113.9"]);
        h.append(
            X_FORWARDED_FOR,
            HeaderValue::from_bytes(b"\xff1.2.3.4").unwrap(),
        );
        assert_eq!(client_ip(ip("10.0.0.1"), &h, &t), ip("10.0.0.1"));
        // Ports are tolerated.
        let h = xff(&["203.0.113.9:4711"]);
        assert_eq!(client_ip(ip("10.0.0.1"), &h, &t), ip("203.0.113.9"));
        let h = xff(&["[2001:db8::9]:4711"]);
        assert_eq!(client_ip(ip("10.0.0.1"), &h, &t), ip("2001:db8::9"));
    }

    #[test]
    fn ipv6_and_mapped_addresses() {
        let t = trusted(&["fd00::/8", "10.0.0.0/8"]);
        let h = xff(&["2001:db8::42"]);
        assert_eq!(client_ip(ip("fd00::1"), &h, &t), ip("2001:db8::42"));
        // A dual-stack socket reports an IPv4 proxy as mapped: still trusted.
        assert_eq!(client_ip(ip("::ffff:10.0.0.1"), &h, &t), ip("2001:db8::42"));
        // Mapped hops and peers come out as IPv4.
        let h = xff(&["::ffff:203.0.113.9"]);
        assert_eq!(client_ip(ip("10.0.0.1"), &h, &t), ip("203.0.113.9"));
        assert_eq!(
            client_ip(ip("::ffff:198.51.100.4"), &HeaderMap::new(), &t),
            ip("198.51.100.4")
        );
        // A mapped trusted-proxy entry matches the IPv4 peer.
        let t = trusted(&["::ffff:10.0.0.0/104"]);
        assert_eq!(t.nets(), &nets(&["10.0.0.0/8"])[..]);
        assert_eq!(client_ip(ip("10.0.0.1"), &h, &t), ip("203.0.113.9"));
    }

    #[test]
    fn allowlist() {
        let list = nets(&["192.0.2.0/24", "2001:db8::/32"]);
        assert!(allowed(ip("192.0.2.10"), &list));
        assert!(!allowed(ip("192.0.3.10"), &list));
        assert!(allowed(ip("2001:db8::1"), &list));
        assert!(!allowed(ip("2001:db9::1"), &list));
        // Mapped IPv6 is its IPv4 address, both ways.
        assert!(allowed(ip("::ffff:192.0.2.10"), &list));
        assert!(!allowed(ip("::ffff:192.0.3.10"), &list));
        assert!(allowed(ip("192.0.2.10"), &nets(&["::ffff:192.0.2.0/120"])));
        // Empty allows everyone.
        assert!(allowed(ip("203.0.113.1"), &[]));
        assert!(allowed(ip("::1"), &[]));
    }

    #[test]
    fn cors_config_errors() {
        assert!(cors_layer(&[]).unwrap().is_none());
        assert!(cors_layer(&[" ".into()]).unwrap().is_none());
        for good in [
            "https://app.example.com",
            "http://localhost:3000",
            "http://127.0.0.1:8080",
            "https://[::1]:8443",
            "https://[::1]",
        ] {
            assert!(parse_origin(good).is_ok(), "{good}");
        }
        for bad in [
            "*",
            "null",
            "app.example.com",
            "https://",
            "https://app.example.com/",
            "https://app.example.com/path",
            "https://app.example.com?x=1",
            "https://user@app.example.com",
            "https://App.Example.com",
            "HTTPS://app.example.com",
            "https://app.example.com:443",
            "http://app.example.com:80",
            "https://app.example.com:0",
            "https://app.example.com:99999",
            "https://app.example.com:",
            "https://app..example.com",
            "https://app_example.com",
            "https://[::1",
            "https://[zz::1]",
            "https://*.example.com",
        ] {
            let err = cors_layer(&["https://ok.example.com".into(), bad.into()]).unwrap_err();
            assert!(err.contains("GATEHOUSE_CORS_ORIGINS"), "{bad}: {err}");
            assert!(err.contains(bad), "{bad}: {err}");
        }
    }

    async fn preflight(app: Router, origin: &str) -> axum::http::Response<Body> {
        app.oneshot(
            Request::builder()
                .method(Method::OPTIONS)
                .uri("/v1/jobs")
                .header(header::ORIGIN, origin)
                .header(header::ACCESS_CONTROL_REQUEST_METHOD, "POST")
                .header(
                    header::ACCESS_CONTROL_REQUEST_HEADERS,
                    "authorization, content-type, idempotency-key",
                )
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap()
    }

    fn cors_app() -> Router {
        let cors = cors_layer(&[
            "https://app.example.com".into(),
            "http://localhost:3000".into(),
        ])
        .unwrap()
        .unwrap();
        Router::new()
            .route("/v1/jobs", get(|| async { "ok" }).post(|| async { "ok" }))
            .layer(cors)
    }

    #[tokio::test]
    async fn cors_preflight_allowed_origin() {
        let res = preflight(cors_app(), "https://app.example.com").await;
        assert!(res.status().is_success(), "{}", res.status());
        let h = res.headers();
        assert_eq!(
            h.get(header::ACCESS_CONTROL_ALLOW_ORIGIN).unwrap(),
            "https://app.example.com"
        );
        let methods = h
            .get(header::ACCESS_CONTROL_ALLOW_METHODS)
            .unwrap()
            .to_str()
            .unwrap();
        for m in ["GET", "POST", "PATCH", "DELETE", "OPTIONS"] {
            assert!(methods.contains(m), "{methods}");
        }
        let allow_headers = h
            .get(header::ACCESS_CONTROL_ALLOW_HEADERS)
            .unwrap()
            .to_str()
            .unwrap();
        for name in ["authorization", "content-type", "idempotency-key"] {
            assert!(allow_headers.contains(name), "{allow_headers}");
        }
        assert_eq!(h.get(header::ACCESS_CONTROL_MAX_AGE).unwrap(), "600");
        assert!(h.get(header::ACCESS_CONTROL_ALLOW_CREDENTIALS).is_none());
        assert!(
            h.get_all(header::VARY)
                .iter()
                .any(|v| v.to_str().unwrap().contains("origin"))
        );
    }

    #[tokio::test]
    async fn cors_preflight_disallowed_origin() {
        for origin in [
            "https://evil.example.com",
            "https://app.example.com.evil.com",
            "http://app.example.com",
            "null",
        ] {
            let res = preflight(cors_app(), origin).await;
            assert!(
                res.headers()
                    .get(header::ACCESS_CONTROL_ALLOW_ORIGIN)
                    .is_none(),
                "{origin}"
            );
        }
    }

    #[tokio::test]
    async fn cors_simple_request_exposes_headers() {
        let res = cors_app()
            .oneshot(
                Request::builder()
                    .uri("/v1/jobs")
                    .header(header::ORIGIN, "http://localhost:3000")
                    .body(Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        let h = res.headers();
        assert_eq!(
            h.get(header::ACCESS_CONTROL_ALLOW_ORIGIN).unwrap(),
            "http://localhost:3000"
        );
        let exposed = h
            .get(header::ACCESS_CONTROL_EXPOSE_HEADERS)
            .unwrap()
            .to_str()
            .unwrap();
        assert!(
            exposed.contains("x-request-id") && exposed.contains("location"),
            "{exposed}"
        );
    }

    async fn extracted(app: Router, peer: Option<&str>, forwarded: Option<&str>) -> String {
        let mut req = Request::builder().uri("/ip");
        if let Some(f) = forwarded {
            req = req.header("x-forwarded-for", f);
        }
        let mut req = req.body(Body::empty()).unwrap();
        if let Some(p) = peer {
            req.extensions_mut()
                .insert(ConnectInfo(SocketAddr::new(ip(p), 40000)));
        }
        let res = app.oneshot(req).await.unwrap();
        let body = http_body_util::BodyExt::collect(res.into_body())
            .await
            .unwrap()
            .to_bytes();
        String::from_utf8(body.to_vec()).unwrap()
    }

    #[tokio::test]
    async fn client_ip_extractor() {
        let route = || {
            Router::new().route(
                "/ip",
                get(|ClientIp(ip): ClientIp| async move { ip.to_string() }),
            )
        };
        let with_layer = || route().layer(layer(trusted(&["10.0.0.0/8"])));
        assert_eq!(
            extracted(with_layer(), Some("10.0.0.1"), Some("203.0.113.9")).await,
            "203.0.113.9"
        );
        assert_eq!(
            extracted(with_layer(), Some("198.51.100.4"), Some("203.0.113.9")).await,
            "198.51.100.4"
        );
        // No ConnectInfo: the peer is 127.0.0.1 (untrusted here, so the header is ignored).
        assert_eq!(
            extracted(with_layer(), None, Some("203.0.113.9")).await,
            "127.0.0.1"
        );
        // No layer: nothing is trusted.
        assert_eq!(
            extracted(route(), Some("10.0.0.1"), Some("203.0.113.9")).await,
            "10.0.0.1"
        );
    }
}
