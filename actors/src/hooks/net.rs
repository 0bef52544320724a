//! Where hooks may connect (outbound SSRF guard) and the HTTP client they use.
//!
//! A hook URL is operator config, but its host can resolve anywhere, and DNS can change
//! between validation and connect. So the check runs on the *resolved* addresses, inside
//! the client's resolver ([`GuardedResolver`]), on every connection. reqwest does not call
//! the resolver for IP-literal hosts, so [`check_url`] covers those, and must run before
//! each request is built. Redirects are never followed (a 3xx could point anywhere) and
//! environment proxies are ignored (with a proxy, the resolver would only see the proxy).
//!
//! Always blocked: link-local (cloud metadata at 169.254.169.254), the AWS IPv6 and Alibaba
//! metadata addresses, unspecified, broadcast, multicast, reserved. `strict` also blocks
//! private, CGNAT, loopback and unique-local ranges, which a home lab normally allows.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};

use crate::redact::mask_url;

/// Why an outbound destination or client was refused.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// The URL's scheme is not http or https.
    #[error("hook URL {url:?} must use http or https, not {scheme:?}")]
    Scheme {
        /// The URL, masked.
        url: String,
        /// The scheme it uses.
        scheme: String,
    },
    /// The URL names no host (the masked URL).
    #[error("hook URL {0:?} has no host")]
    NoHost(String),
    /// The host is, or resolves to, an address the egress policy forbids.
    #[error("{} is blocked: {reason}", host_and_ip(host, ip))]
    Blocked {
        /// The host as written in the URL.
        host: String,
        /// The refused address.
        ip: IpAddr,
        /// Which rule refused it (link-local, cloud metadata, private under `strict`, …).
        reason: &'static str,
    },
    /// The name resolved to no address at all.
    #[error("{host} did not resolve to any address")]
    NoAddress {
        /// The host looked up.
        host: String,
    },
    /// The DNS lookup failed.
    #[error("could not resolve {host}: {error}")]
    Resolve {
        /// The host looked up.
        host: String,
        /// The resolver's error.
        error: std::io::Error,
    },
    /// reqwest refused to build the client.
    #[error("could not build the HTTP client: {0}")]
    Client(#[source] reqwest::Error),
}

/// `name (ip)`, or just the address when the host is an IP literal.
fn host_and_ip(host: &str, ip: &IpAddr) -> String {
    let literal = host.trim_start_matches('[').trim_end_matches(']');
    if literal.parse::<IpAddr>().is_ok() {
        host.to_owned()
    } else {
        format!("{host} ({ip})")
    }
}

/// Why `ip` may not be contacted, or `None` when it may. `strict` adds the private and
/// loopback ranges to the always-blocked ones. IPv4-mapped (`::ffff:a.b.c.d`) and NAT64
/// (`64:ff9b::a.b.c.d`) addresses are judged by the IPv4 address inside.
pub fn is_blocked(ip: IpAddr, strict: bool) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => blocked_v4(v4, strict),
        IpAddr::V6(v6) => match embedded_v4(v6) {
            Some(v4) => blocked_v4(v4, strict),
            None => blocked_v6(v6, strict),
        },
    }
}

/// The IPv4 address inside an IPv4-mapped or NAT64 well-known-prefix address.
fn embedded_v4(v6: Ipv6Addr) -> Option<Ipv4Addr> {
    if let Some(v4) = v6.to_ipv4_mapped() {
        return Some(v4);
    }
    let s = v6.segments();
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        let [a, b] = s[6].to_be_bytes();
        let [c, d] = s[7].to_be_bytes();
        return Some(Ipv4Addr::new(a, b, c, d));
    }
    None
}

const ALIBABA_METADATA: Ipv4Addr = Ipv4Addr::new(100, 100, 100, 200);
const AWS_METADATA_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x0ec2, 0, 0, 0, 0, 0, 0x0254);

fn blocked_v4(ip: Ipv4Addr, strict: bool) -> Option<&'static str> {
    let [a, b, ..] = ip.octets();
    // Always: no configuration makes these a sensible webhook target.
    if ip == ALIBABA_METADATA {
        return Some("cloud metadata address");
    }
    if ip.is_link_local() {
        return Some("link-local address (cloud metadata lives at 169.254.169.254)");
    }
    if a == 0 {
        // 0.0.0.0/8: "this network"; Linux connects 0.0.0.0 to the local host.
        return Some("unspecified address");
    }
    if ip.is_broadcast() {
        return Some("broadcast address");
    }
    if ip.is_multicast() {
        return Some("multicast address");
    }
    if a >= 240 {
        return Some("reserved address");
    }
    if !strict {
        return None;
    }
    if ip.is_loopback() {
        return Some("loopback address (outbound.strict)");
    }
    if ip.is_private() {
        return Some("private address (outbound.strict)");
    }
    if a == 100 && (64..128).contains(&b) {
        return Some("shared CGNAT address (outbound.strict)");
    }
    None
}

fn blocked_v6(ip: Ipv6Addr, strict: bool) -> Option<&'static str> {
    let first = ip.segments()[0];
    if ip == AWS_METADATA_V6 {
        return Some("cloud metadata address");
    }
    if ip.is_unspecified() {
        return Some("unspecified address");
    }
    if first & 0xffc0 == 0xfe80 {
        return Some("link-local address");
    }
    if ip.is_multicast() {
        return Some("multicast address");
    }
    if !strict {
        return None;
    }
    if ip.is_loopback() {
        return Some("loopback address (outbound.strict)");
    }
    if first & 0xfe00 == 0xfc00 {
        return Some("unique-local address (outbound.strict)");
    }
    None
}

/// Checks a hook URL before a request: http(s) only, and an IP-literal host must not be
/// blocked (names are checked after resolution, by [`GuardedResolver`]).
pub fn check_url(url: &reqwest::Url, strict: bool) -> Result<(), NetError> {
    if !matches!(url.scheme(), "http" | "https") {
        return Err(NetError::Scheme {
            url: mask_url(url.as_str()),
            scheme: url.scheme().to_owned(),
        });
    }
    let host = url
        .host_str()
        .ok_or_else(|| NetError::NoHost(mask_url(url.as_str())))?;
    // The URL parser has already normalised IPv4 forms like `2130706433` or `0x7f.1`.
    let literal = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = literal.parse::<IpAddr>() {
        if let Some(reason) = is_blocked(ip, strict) {
            return Err(NetError::Blocked {
                host: host.to_owned(),
                ip,
                reason,
            });
        }
    }
    Ok(())
}

/// Keeps the resolved addresses that may be contacted; an error naming the first blocked
/// address when none may.
fn allowed_addrs(
    host: &str,
    addrs: impl IntoIterator<Item = SocketAddr>,
    strict: bool,
) -> Result<Vec<SocketAddr>, NetError> {
    let mut allowed = Vec::new();
    let mut first_blocked = None;
    for addr in addrs {
        match is_blocked(addr.ip(), strict) {
            None => allowed.push(addr),
            Some(reason) => {
                tracing::debug!(host, ip = %addr.ip(), reason, "dropping blocked address");
                first_blocked.get_or_insert((addr.ip(), reason));
            }
        }
    }
    match (allowed.is_empty(), first_blocked) {
        (false, _) => Ok(allowed),
        (true, Some((ip, reason))) => Err(NetError::Blocked {
            host: host.to_owned(),
            ip,
            reason,
        }),
        (true, None) => Err(NetError::NoAddress {
            host: host.to_owned(),
        }),
    }
}

/// A DNS resolver that drops blocked addresses, so the address actually connected to is the
/// one checked (no DNS-rebinding window between a check and the connect).
#[derive(Clone, Copy, Debug)]
pub struct GuardedResolver {
    strict: bool,
}

impl GuardedResolver {
    /// A resolver applying [`is_blocked`] with `strict`.
    pub fn new(strict: bool) -> Self {
        GuardedResolver { strict }
    }
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let strict = self.strict;
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let resolved = tokio::net::lookup_host((host.as_str(), 0))
                .await
                .map_err(|error| NetError::Resolve {
                    host: host.clone(),
                    error,
                })?;
            let allowed = allowed_addrs(&host, resolved, strict)?;
            Ok(Box::new(allowed.into_iter()) as Addrs)
        })
    }
}

/// The `User-Agent` of every hook request.
pub const USER_AGENT: &str = concat!("relayarr/", env!("CARGO_PKG_VERSION"));

/// The HTTP client for hooks: [`GuardedResolver`], no redirects, no environment proxy,
/// `timeout` per request (connect included), and up to `keep_idle` idle keep-alive
/// connections: the hook's cap, so a busy hook reuses every connection it runs. (A smaller
/// idle pool than the cap closed and reopened connections on every burst: with a cap of 32
/// and 8 kept, three in four requests paid for a new TCP connection.)
pub fn client(
    timeout: Duration,
    strict: bool,
    keep_idle: usize,
) -> Result<reqwest::Client, NetError> {
    reqwest::Client::builder()
        .dns_resolver(Arc::new(GuardedResolver::new(strict)))
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .user_agent(USER_AGENT)
        .timeout(timeout)
        .connect_timeout(timeout)
        .pool_idle_timeout(Duration::from_secs(60))
        .pool_max_idle_per_host(keep_idle.max(1))
        .tcp_keepalive(Duration::from_secs(60))
        .referer(false)
        .build()
        .map_err(NetError::Client)
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn net_always_blocks_metadata_link_local_and_special_addresses() {
        for s in [
            "169.254.169.254",
            "169.254.0.1",
            "100.100.100.200",
            "0.0.0.0",
            "0.1.2.3",
            "255.255.255.255",
            "224.0.0.1",
            "239.255.255.250",
            "240.0.0.1",
            "::",
            "fe80::1",
            "febf::1",
            "fd00:ec2::254",
            "ff02::1",
            "::ffff:169.254.169.254",
            "::ffff:0.0.0.0",
            "64:ff9b::a9fe:a9fe",
        ] {
            for strict in [false, true] {
                assert!(is_blocked(ip(s), strict).is_some(), "{s} strict={strict}");
            }
        }
        assert_eq!(
            is_blocked(ip("::ffff:169.254.169.254"), false),
            is_blocked(ip("169.254.169.254"), false)
        );
    }

    #[test]
    fn net_default_allows_lan_and_loopback() {
        for s in [
            "127.0.0.1",
            "10.0.0.5",
            "172.16.0.1",
            "172.31.255.254",
            "192.168.1.10",
            "100.64.0.1",
            "100.100.100.201",
            "::1",
            "fd12:3456::1",
            "fc00::1",
            "::ffff:192.168.1.10",
            "8.8.8.8",
            "2606:4700::1111",
            "fec0::1",
        ] {
            assert_eq!(is_blocked(ip(s), false), None, "{s}");
        }
    }

    #[test]
    fn net_strict_blocks_private_and_loopback() {
        for s in [
            "127.0.0.1",
            "127.1.2.3",
            "10.0.0.5",
            "172.16.0.1",
            "172.31.255.254",
            "192.168.1.10",
            "100.64.0.1",
            "100.127.255.255",
            "::1",
            "fd12:3456::1",
            "fc00::1",
            "::ffff:127.0.0.1",
            "::ffff:10.1.1.1",
        ] {
            assert!(is_blocked(ip(s), true).is_some(), "{s}");
        }
        for s in [
            "8.8.8.8",
            "172.15.0.1",
            "172.32.0.1",
            "100.63.255.255",
            "100.128.0.0",
            "2606:4700::1111",
            "::ffff:1.1.1.1",
        ] {
            assert_eq!(is_blocked(ip(s), true), None, "{s}");
        }
    }

    fn url(s: &str) -> reqwest::Url {
        reqwest::Url::parse(s).expect("url")
    }

    #[test]
    fn net_check_url_schemes_and_ip_literals() {
        assert!(check_url(&url("https://discord.com/api/webhooks/1/tok"), true).is_ok());
        assert!(check_url(&url("http://192.168.1.5:8080/hook"), false).is_ok());
        assert!(check_url(&url("http://localhost/hook"), true).is_ok());
        let err = check_url(&url("ftp://example.com/x"), false).expect_err("scheme");
        assert!(matches!(err, NetError::Scheme { .. }), "{err}");
        assert!(check_url(&url("file:///etc/passwd"), false).is_err());
        let err = check_url(&url("http://169.254.169.254/latest/meta-data"), false)
            .expect_err("metadata");
        assert!(err.to_string().contains("169.254.169.254"), "{err}");
        assert!(check_url(&url("http://[fd00:ec2::254]/"), false).is_err());
        assert!(check_url(&url("http://[::ffff:169.254.169.254]/"), false).is_err());
        assert!(check_url(&url("http://[::1]:9000/"), false).is_ok());
        assert!(check_url(&url("http://[::1]:9000/"), true).is_err());
        // Alternative IPv4 spellings are normalised by the URL parser first.
        assert!(check_url(&url("http://2130706433/"), true).is_err());
        assert!(check_url(&url("http://0x7f.1/"), true).is_err());
        assert!(check_url(&url("http://0/"), false).is_err());
    }

    #[test]
    fn net_errors_do_not_leak_url_paths() {
        let err = check_url(&url("gopher://h.example/api/webhooks/1/SECRET?x=1"), false)
            .expect_err("scheme")
            .to_string();
        assert!(!err.contains("SECRET"), "{err}");
        assert!(err.contains("h.example"), "{err}");
    }

    #[test]
    fn net_allowed_addrs_drops_blocked_and_errors_when_none_remain() {
        let a = |s: &str| SocketAddr::new(ip(s), 0);
        let got = allowed_addrs("h", [a("169.254.169.254"), a("192.168.1.2")], false).expect("ok");
        assert_eq!(got, vec![a("192.168.1.2")]);
        let err = allowed_addrs("h", [a("169.254.169.254")], false).expect_err("blocked");
        assert!(err.to_string().contains("link-local"), "{err}");
        assert!(matches!(
            allowed_addrs("h", [], false),
            Err(NetError::NoAddress { .. })
        ));
    }

    async fn resolve(host: &str, strict: bool) -> Result<Vec<SocketAddr>, String> {
        let name = Name::from_str(host).map_err(|e| e.to_string())?;
        GuardedResolver::new(strict)
            .resolve(name)
            .await
            .map(|addrs| addrs.collect())
            .map_err(|e| e.to_string())
    }

    #[tokio::test]
    async fn net_resolver_filters_resolved_addresses() {
        let local = resolve("localhost", false)
            .await
            .expect("localhost allowed");
        assert!(local.iter().all(|a| a.ip().is_loopback()), "{local:?}");
        let err = resolve("localhost", true)
            .await
            .expect_err("strict refuses loopback");
        assert!(err.contains("loopback"), "{err}");
        let err = resolve("169.254.169.254", false)
            .await
            .expect_err("metadata");
        assert!(err.contains("link-local"), "{err}");
    }

    /// A one-shot HTTP server on 127.0.0.1 answering every request with `status`.
    async fn serve(status: &'static str) -> u16 {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        tokio::spawn(async move {
            while let Ok((mut sock, _)) = listener.accept().await {
                let mut buf = [0u8; 4096];
                let _ = sock.read(&mut buf).await;
                let reply = format!(
                    "HTTP/1.1 {status}\r\nlocation: http://169.254.169.254/\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                );
                let _ = sock.write_all(reply.as_bytes()).await;
            }
        });
        port
    }

    #[tokio::test]
    async fn net_client_uses_the_guard_and_never_follows_redirects() {
        let port = serve("302 Found").await;
        let lan = client(Duration::from_secs(5), false, 1).expect("client");
        let resp = lan
            .get(format!("http://localhost:{port}/"))
            .send()
            .await
            .expect("reaches localhost when not strict");
        assert_eq!(resp.status().as_u16(), 302);

        let strict = client(Duration::from_secs(5), true, 1).expect("client");
        let err = strict
            .get(format!("http://localhost:{port}/"))
            .send()
            .await
            .expect_err("strict refuses localhost");
        let chain = std::iter::successors(Some(&err as &(dyn std::error::Error + 'static)), |e| {
            e.source()
        })
        .map(|e| e.to_string())
        .collect::<Vec<_>>()
        .join(": ");
        assert!(chain.contains("loopback"), "{chain}");
    }
}
