//! Who a client is, for everything that limits clients (the rate limit, password checks,
//! connections per client): its IP address, with every IPv6 address of one /64 counted as
//! one client (a single host is usually handed a whole /64). Behind a trusted reverse proxy
//! the client is the last address of `X-Forwarded-For`, the one the proxy itself saw; from
//! anyone else that header is ignored, since a client can write anything in it.
//! Credentials never make a client: anyone can make up new ones for every request.

use std::net::{IpAddr, Ipv6Addr};

use axum::http::HeaderMap;

/// A client for the limits: a normalised address (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClientAddr(IpAddr);

impl ClientAddr {
    /// The client connected from `peer`.
    pub fn of_peer(peer: IpAddr) -> Self {
        let ip = match peer {
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => IpAddr::V4(v4),
                None => {
                    let prefix = u128::from(v6) & !((1u128 << 64) - 1);
                    IpAddr::V6(Ipv6Addr::from(prefix))
                }
            },
            v4 => v4,
        };
        Self(ip)
    }

    /// The client of a request that came from `peer`: `peer` itself, or where `peer` is a
    /// trusted proxy, the last address in its `X-Forwarded-For`.
    pub fn of_request(peer: IpAddr, headers: &HeaderMap, trusted_proxies: &[IpAddr]) -> Self {
        if trusted_proxies.contains(&peer) {
            // The last hop only, as the proxy wrote it: anything before it is the client's
            // own say, and an unreadable last hop is not replaced by an earlier one.
            let last_hop = headers
                .get_all("x-forwarded-for")
                .iter()
                .filter_map(|value| value.to_str().ok())
                .flat_map(|value| value.split(','))
                .next_back()
                .and_then(|hop| hop.trim().parse::<IpAddr>().ok());
            if let Some(client) = last_hop {
                return Self::of_peer(client);
            }
        }
        Self::of_peer(peer)
    }
}

impl std::fmt::Display for ClientAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(forwarded: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert("x-forwarded-for", forwarded.parse().unwrap());
        headers
    }

    #[test]
    fn one_ipv6_host_is_one_client_and_mapped_ipv4_is_ipv4() {
        let a = ClientAddr::of_peer("2001:db8:1:2:aaaa::1".parse().unwrap());
        let b = ClientAddr::of_peer("2001:db8:1:2:bbbb::2".parse().unwrap());
        let other = ClientAddr::of_peer("2001:db8:1:3::1".parse().unwrap());
        assert_eq!(a, b);
        assert_ne!(a, other);
        assert_eq!(
            ClientAddr::of_peer("::ffff:192.0.2.7".parse().unwrap()),
            ClientAddr::of_peer("192.0.2.7".parse().unwrap())
        );
    }

    #[test]
    fn forwarded_addresses_count_only_from_trusted_proxies() {
        let proxy: IpAddr = "127.0.0.1".parse().unwrap();
        let client: IpAddr = "192.0.2.9".parse().unwrap();
        let spoofed = headers("203.0.113.1, 192.0.2.9");
        assert_eq!(
            ClientAddr::of_request(proxy, &spoofed, &[proxy]),
            ClientAddr::of_peer(client),
            "the last hop is what the proxy saw"
        );
        assert_eq!(
            ClientAddr::of_request(proxy, &spoofed, &[]),
            ClientAddr::of_peer(proxy),
            "an untrusted peer's header is ignored"
        );
        assert_eq!(
            ClientAddr::of_request(proxy, &headers("garbage"), &[proxy]),
            ClientAddr::of_peer(proxy)
        );
        assert_eq!(
            ClientAddr::of_request(proxy, &headers("192.0.2.9, garbage"), &[proxy]),
            ClientAddr::of_peer(proxy),
            "an unreadable last hop does not promote an earlier one"
        );
    }
}
