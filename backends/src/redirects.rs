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

/// Whether `url` names this host or its local networks by address or as `localhost`. A
/// public name that resolves to such an address is not caught here.
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
    let [first, second, ..] = ip.octets();
    ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        // 100.64.0.0/10, carrier-grade NAT (and some clouds' internal services).
        || (first == 100 && (64..128).contains(&second))
}

fn is_internal_v6(ip: Ipv6Addr) -> bool {
    let first = ip.segments()[0];
    ip.is_loopback()
        || ip.is_unspecified()
        || (first & 0xfe00) == 0xfc00 // unique local
        || (first & 0xffc0) == 0xfe80 // link-local
        || ip.to_ipv4_mapped().is_some_and(is_internal_v4)
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
