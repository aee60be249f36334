//! Where deliveries may go. A delivery connects only to public unicast addresses: loopback,
//! private, shared (CGNAT), link-local (169.254.169.254, the cloud metadata address),
//! multicast, documentation, benchmarking, reserved and unspecified ranges, their IPv6
//! equivalents, and IPv6 forms that embed such an IPv4 address (mapped, NAT64, 6to4) are
//! refused unless `GATEHOUSE_WEBHOOK_ALLOW_CIDRS` allows them. URLs must be `https` unless
//! `GATEHOUSE_WEBHOOK_ALLOW_HTTP`. The api checks URLs when they are registered; the worker
//! checks again, and checks every address a name resolves to at connect time (its resolver
//! drops refused addresses), so DNS cannot be used to slip past the rules.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

/// Longest endpoint URL.
pub const MAX_URL_CHARS: usize = 2048;

/// Why an address or URL is refused: shown in attempts and API errors.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("address {ip} is {class} (refused; GATEHOUSE_WEBHOOK_ALLOW_CIDRS can allow it)")]
    Address { ip: IpAddr, class: &'static str },
    #[error("{host} resolves to no allowed address ({reason})")]
    Resolved { host: String, reason: String },
    #[error("scheme `{0}` refused: https only (GATEHOUSE_WEBHOOK_ALLOW_HTTP allows http)")]
    Scheme(String),
    #[error("not a valid URL: {0}")]
    Url(String),
}

impl Refusal {
    /// A short stable code: `address`, `scheme`, `url`.
    pub fn code(&self) -> &'static str {
        match self {
            Refusal::Address { .. } | Refusal::Resolved { .. } => "address_refused",
            Refusal::Scheme(_) => "scheme_refused",
            Refusal::Url(_) => "invalid_url",
        }
    }
}

/// The rules, with the operator's exceptions.
#[derive(Debug, Clone, Default)]
pub struct AddressPolicy {
    allow: Vec<IpNet>,
    allow_http: bool,
}

impl AddressPolicy {
    pub fn new(allow: Vec<IpNet>, allow_http: bool) -> Self {
        Self { allow, allow_http }
    }

    /// `Ok` when a delivery may connect to `ip`.
    pub fn check(&self, ip: IpAddr) -> Result<(), Refusal> {
        let ip = canonical(ip);
        if self.allow.iter().any(|net| net.contains(&ip)) {
            return Ok(());
        }
        match class(ip) {
            None => Ok(()),
            Some(class) => Err(Refusal::Address { ip, class }),
        }
    }

    /// Parses and checks an endpoint URL: http(s), a host, no credentials, within
    /// [`MAX_URL_CHARS`], and a literal IP host allowed by [`AddressPolicy::check`]. Names are
    /// checked when they are resolved, at connect time.
    pub fn check_url(&self, raw: &str) -> Result<url::Url, Refusal> {
        if raw.chars().count() > MAX_URL_CHARS {
            return Err(Refusal::Url(format!(
                "longer than {MAX_URL_CHARS} characters"
            )));
        }
        let url = url::Url::parse(raw).map_err(|e| Refusal::Url(e.to_string()))?;
        match url.scheme() {
            "https" => {}
            "http" if self.allow_http => {}
            other => return Err(Refusal::Scheme(other.to_string())),
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(Refusal::Url(
                "credentials in the URL are not allowed".into(),
            ));
        }
        if url.fragment().is_some() {
            return Err(Refusal::Url("a URL fragment is not allowed".into()));
        }
        match url.host() {
            None => return Err(Refusal::Url("the URL has no host".into())),
            Some(url::Host::Ipv4(ip)) => self.check(IpAddr::V4(ip))?,
            Some(url::Host::Ipv6(ip)) => self.check(IpAddr::V6(ip))?,
            Some(url::Host::Domain(_)) => {}
        }
        Ok(url)
    }
}

/// IPv4-mapped IPv6 addresses are their IPv4 address.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => ip,
        },
        v4 => v4,
    }
}

/// The refused class `ip` belongs to, if any.
pub fn class(ip: IpAddr) -> Option<&'static str> {
    match canonical(ip) {
        IpAddr::V4(v4) => class_v4(v4),
        IpAddr::V6(v6) => class_v6(v6),
    }
}

fn in_v4(ip: Ipv4Addr, net: [u8; 4], prefix: u8) -> bool {
    let mask = if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(prefix))
    };
    u32::from(ip) & mask == u32::from(Ipv4Addr::from(net)) & mask
}

fn class_v4(ip: Ipv4Addr) -> Option<&'static str> {
    const RANGES: &[([u8; 4], u8, &str)] = &[
        ([0, 0, 0, 0], 8, "unspecified (\"this network\")"),
        ([10, 0, 0, 0], 8, "private"),
        ([100, 64, 0, 0], 10, "shared address space (CGNAT)"),
        ([127, 0, 0, 0], 8, "loopback"),
        ([169, 254, 0, 0], 16, "link-local (incl. cloud metadata)"),
        ([172, 16, 0, 0], 12, "private"),
        ([192, 0, 0, 0], 24, "IETF protocol assignments"),
        ([192, 0, 2, 0], 24, "documentation"),
        ([192, 88, 99, 0], 24, "6to4 relay anycast"),
        ([192, 168, 0, 0], 16, "private"),
        ([198, 18, 0, 0], 15, "benchmarking"),
        ([198, 51, 100, 0], 24, "documentation"),
        ([203, 0, 113, 0], 24, "documentation"),
        ([224, 0, 0, 0], 4, "multicast"),
        ([240, 0, 0, 0], 4, "reserved (incl. broadcast)"),
    ];
    RANGES
        .iter()
        .find(|(net, prefix, _)| in_v4(ip, *net, *prefix))
        .map(|(_, _, class)| *class)
}

fn class_v6(ip: Ipv6Addr) -> Option<&'static str> {
    let seg = ip.segments();
    if ip.is_unspecified() {
        return Some("unspecified");
    }
    if ip.is_loopback() {
        return Some("loopback");
    }
    // IPv4 embedded by NAT64 (64:ff9b::/96) or 6to4 (2002::/16): the IPv4 address decides.
    if seg[0] == 0x64 && seg[1] == 0xff9b && seg[2..6] == [0, 0, 0, 0] {
        let v4 = Ipv4Addr::new(
            (seg[6] >> 8) as u8,
            seg[6] as u8,
            (seg[7] >> 8) as u8,
            seg[7] as u8,
        );
        return class_v4(v4).map(|_| "NAT64 of a refused IPv4 address");
    }
    if seg[0] == 0x2002 {
        let v4 = Ipv4Addr::new(
            (seg[1] >> 8) as u8,
            seg[1] as u8,
            (seg[2] >> 8) as u8,
            seg[2] as u8,
        );
        return class_v4(v4).map(|_| "6to4 of a refused IPv4 address");
    }
    let prefix = |bits: u32, value: u128| -> bool {
        let mask = if bits == 0 {
            0
        } else {
            u128::MAX << (128 - bits)
        };
        u128::from(ip) & mask == value & mask
    };
    const RANGES: &[(u128, u32, &str)] = &[
        (0, 96, "IPv4-compatible (deprecated)"),
        (0x0064_ff9b_0001 << 80, 48, "local-use NAT64"),
        (0x0100 << 112, 64, "discard-only"),
        (
            0x2001 << 112,
            23,
            "IETF protocol assignments (incl. Teredo)",
        ),
        (0x2001_0db8 << 96, 32, "documentation"),
        (0x3fff << 112, 20, "documentation"),
        (0xfc00 << 112, 7, "unique local (private)"),
        (0xfe80 << 112, 10, "link-local"),
        (0xfec0 << 112, 10, "site-local (deprecated)"),
        (0xff00 << 112, 8, "multicast"),
    ];
    RANGES
        .iter()
        .find(|(net, bits, _)| prefix(*bits, *net))
        .map(|(_, _, class)| *class)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("address")
    }

    #[test]
    fn internal_addresses_are_refused_and_public_ones_allowed() {
        let policy = AddressPolicy::default();
        for refused in [
            "127.0.0.1",
            "127.8.9.10",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "224.0.0.1",
            "255.255.255.255",
            "198.18.0.1",
            "::1",
            "::",
            "fe80::1",
            "fc00::1",
            "fd12:3456::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "64:ff9b::a9fe:a9fe",
            "2002:7f00:1::1",
            "2001:db8::1",
            "2001::1",
        ] {
            assert!(policy.check(ip(refused)).is_err(), "{refused} allowed");
        }
        for allowed in [
            "1.1.1.1",
            "93.184.216.34",
            "172.32.0.1",
            "2606:4700:4700::1111",
            "64:ff9b::101:101",
            "::ffff:8.8.8.8",
        ] {
            assert_eq!(policy.check(ip(allowed)), Ok(()), "{allowed}");
        }
        let loopback_ok = AddressPolicy::new(vec!["127.0.0.1/32".parse().expect("net")], false);
        assert_eq!(loopback_ok.check(ip("127.0.0.1")), Ok(()));
        assert_eq!(loopback_ok.check(ip("::ffff:127.0.0.1")), Ok(()));
        assert!(loopback_ok.check(ip("127.0.0.2")).is_err());
        let err = policy.check(ip("169.254.169.254")).unwrap_err().to_string();
        assert!(err.contains("link-local"), "{err}");
    }

    #[test]
    fn urls_are_https_with_a_host_and_no_credentials() {
        let strict = AddressPolicy::default();
        assert!(strict.check_url("https://hooks.example.com/in?x=1").is_ok());
        assert!(strict.check_url("https://93.184.216.34:8443/in").is_ok());
        assert_eq!(
            strict
                .check_url("http://hooks.example.com/")
                .unwrap_err()
                .code(),
            "scheme_refused"
        );
        for bad in [
            "ftp://hooks.example.com/",
            "https://user:pw@hooks.example.com/",
            "https://127.0.0.1/",
            "https://[::1]:8080/",
            "https://169.254.169.254/latest/meta-data",
            "https://0x7f000001/",
            "https://2130706433/",
            "not a url",
            "https://",
            "mailto:a@example.com",
            "https://hooks.example.com/#frag",
        ] {
            assert!(strict.check_url(bad).is_err(), "{bad} accepted");
        }
        let long = format!("https://example.com/{}", "a".repeat(MAX_URL_CHARS));
        assert!(strict.check_url(&long).is_err());
        let http = AddressPolicy::new(Vec::new(), true);
        assert!(http.check_url("http://hooks.example.com/").is_ok());
    }
}
