//! Which redirects a binary-cache client follows. Another cache may send a file elsewhere
//! (attic hands NARs to S3), but what it redirects to is fetched from the oranc host, and
//! for files no signature covers (build logs) served back to clients: a public cache must
//! not make that host read its own network (SSRF, e.g. a cloud metadata address).

use std::net::{Ipv4Addr, Ipv6Addr};

/// Redirects followed for one file.
const MAX_REDIRECTS: usize = 5;

/// At most [`MAX_REDIRECTS`]; anywhere on `base`'s own origin; to another origin only when
/// it does not go from https to http, and to a loopback, private or link-local address only
/// when `base` is at one itself.
pub fn policy(base: url::Url) -> reqwest::redirect::Policy {
    let base_is_internal = is_internal(&base);
    reqwest::redirect::Policy::custom(move |attempt| {
        if attempt.previous().len() > MAX_REDIRECTS {
            return attempt.error(format!("more than {MAX_REDIRECTS} redirects"));
        }
        let target = attempt.url();
        if target.origin() == base.origin() {
            return attempt.follow();
        }
        if base.scheme() == "https" && target.scheme() != "https" {
            return attempt.error("a redirect from https to plain http; not followed");
        }
        if is_internal(target) && !base_is_internal {
            return attempt
                .error("a redirect to a loopback, private or link-local address; not followed");
        }
        attempt.follow()
    })
}

/// The client's name lookups: a name other than the cache's own may not resolve to a
/// loopback, private or link-local address unless the cache is at one itself. That closes
/// what [`policy`] cannot see: a redirect to a name that `/etc/hosts` or DNS points inside
/// (the machine's own hostname, `metadata.google.internal`).
pub fn resolver(base: &url::Url) -> std::sync::Arc<OutwardResolver> {
    std::sync::Arc::new(OutwardResolver {
        own_host: base.host_str().unwrap_or_default().to_ascii_lowercase(),
        inward_allowed: is_internal(base),
    })
}

pub struct OutwardResolver {
    own_host: String,
    inward_allowed: bool,
}

impl reqwest::dns::Resolve for OutwardResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let name = name.as_str().to_ascii_lowercase();
        let keep_all = self.inward_allowed || name == self.own_host;
        Box::pin(async move {
            let found: Vec<std::net::SocketAddr> = tokio::net::lookup_host((name.as_str(), 0))
                .await?
                .filter(|addr| keep_all || !is_internal_ip(addr.ip()))
                .collect();
            if found.is_empty() {
                return Err(format!(
                    "{name} resolves to no address outside this host's networks; not followed"
                )
                .into());
            }
            Ok(Box::new(found.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

fn is_internal_ip(ip: std::net::IpAddr) -> bool {
    match ip {
        std::net::IpAddr::V4(ip) => is_internal_v4(ip),
        std::net::IpAddr::V6(ip) => is_internal_v6(ip),
    }
}

/// Whether `url` names this host or its local networks by address or as `localhost`. A
/// name that resolves to such an address is caught by [`resolver`].
fn is_internal(url: &url::Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(ip)) => is_internal_v4(ip),
        Some(url::Host::Ipv6(ip)) => is_internal_v6(ip),
        Some(url::Host::Domain(name)) => {
            let name = name.trim_end_matches('.').to_ascii_lowercase();
            name == "localhost" || name.ends_with(".localhost")
        }
        None => true,
    }
}

fn is_internal_v4(ip: Ipv4Addr) -> bool {
    let [first, second, third, _] = ip.octets();
    ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_broadcast()
        // 0.0.0.0/8, "this network".
        || first == 0
        // 100.64.0.0/10, carrier-grade NAT (and some clouds' internal services).
        || (first == 100 && (64..128).contains(&second))
        // 192.0.0.0/24, protocol assignments.
        || (first == 192 && second == 0 && third == 0)
}

fn is_internal_v6(ip: Ipv6Addr) -> bool {
    let segments = ip.segments();
    let first = segments[0];
    let embedded_v4 = || {
        let [.., a, b] = segments;
        Ipv4Addr::from((u32::from(a) << 16) | u32::from(b))
    };
    ip.is_loopback()
        || ip.is_unspecified()
        || (first & 0xfe00) == 0xfc00 // unique local
        || (first & 0xffc0) == 0xfe80 // link-local
        || (first & 0xffc0) == 0xfec0 // site-local (deprecated, still routed inside some networks)
        || ip.to_ipv4_mapped().is_some_and(is_internal_v4)
        // ::a.b.c.d (IPv4-compatible) and 64:ff9b::a.b.c.d (NAT64) reach an IPv4 address.
        || (segments[..6] == [0; 6] && is_internal_v4(embedded_v4()))
        || (segments[..6] == [0x64, 0xff9b, 0, 0, 0, 0] && is_internal_v4(embedded_v4()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    use super::*;

    /// A server that answers every request with `answer`; its address.
    async fn answering(answer: String) -> std::net::SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let mut request = [0u8; 4096];
                let _ = socket.read(&mut request).await;
                let _ = socket.write_all(answer.as_bytes()).await;
            }
        });
        addr
    }

    #[tokio::test]
    async fn a_public_cache_cannot_send_the_client_into_the_hosts_own_network() {
        let secret = answering(
            "HTTP/1.1 200 OK\r\ncontent-length: 6\r\nconnection: close\r\n\r\nsecret".into(),
        )
        .await;
        let redirecting = answering(format!(
            "HTTP/1.1 302 Found\r\nlocation: http://{secret}/latest/meta-data\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
        ))
        .await;
        // A cache by a public name (resolved here to the local test server).
        let base: url::Url = format!("http://cache.example.org:{}", redirecting.port())
            .parse()
            .unwrap();
        let client = reqwest::Client::builder()
            .resolve("cache.example.org", redirecting)
            .redirect(policy(base.clone()))
            .build()
            .unwrap();
        let error = client
            .get(base.join("log/x.drv").unwrap())
            .send()
            .await
            .unwrap_err();
        assert!(error.is_redirect(), "{error}");
        // A name that resolves inside (here `localhost`'s twin in /etc/hosts, any name the
        // resolver maps to loopback) is refused at lookup, whatever the policy saw.
        let outward = resolver(&base);
        let looked_up =
            reqwest::dns::Resolve::resolve(outward.as_ref(), "localhost".parse().unwrap()).await;
        assert!(looked_up.is_err());
        let own = resolver(&"http://localhost:1/".parse().unwrap());
        assert!(
            reqwest::dns::Resolve::resolve(own.as_ref(), "localhost".parse().unwrap())
                .await
                .is_ok(),
            "a cache at a local name may use it"
        );
        // The same redirect from a cache at a local address is followed.
        let local: url::Url = format!("http://{redirecting}").parse().unwrap();
        let client = reqwest::Client::builder()
            .redirect(policy(local.clone()))
            .build()
            .unwrap();
        let answer = client
            .get(local.join("log/x.drv").unwrap())
            .send()
            .await
            .unwrap();
        assert_eq!(answer.text().await.unwrap(), "secret");
    }

    #[test]
    fn addresses_of_this_host_and_its_networks_are_internal() {
        for internal in [
            "http://127.0.0.1:9/x",
            "http://10.1.2.3/x",
            "http://169.254.169.254/latest/meta-data/",
            "http://192.168.0.1/",
            "http://100.100.100.200/",
            "http://[::1]/",
            "http://[fd00::1]/",
            "http://[fe80::1]/",
            "http://[::ffff:127.0.0.1]/",
            "http://[::127.0.0.1]/",
            "http://[64:ff9b::a9fe:a9fe]/",
            "http://[fec0::1]/",
            "http://0.0.0.1/",
            "http://192.0.0.170/",
            "http://localhost:8080/",
            "http://api.localhost/",
        ] {
            assert!(is_internal(&internal.parse().unwrap()), "{internal}");
        }
        for public in [
            "https://cache.nixos.org/x",
            "https://s3.amazonaws.com/b/x",
            "http://93.184.216.34/",
        ] {
            assert!(!is_internal(&public.parse().unwrap()), "{public}");
        }
    }
}
