//! The shopper's address when Moongate runs behind a reverse proxy.
//!
//! The cashier hands the shopper's IP to WeChat Pay (H5 payments are bound to it). Behind a
//! proxy the connection comes from the proxy, so the address is taken from
//! `X-Forwarded-For`, but only when the connection comes from an address listed in
//! `server.trusted_proxies` (anyone else could write the header), and then as the right-most
//! entry that is not itself a trusted proxy (entries to the left were written by the client).

use std::net::{IpAddr, SocketAddr};

use axum::http::HeaderMap;

/// An address range: `10.0.0.0/8`, `::1/128`, or one address (`192.0.2.7`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IpRange {
    network: IpAddr,
    prefix: u8,
}

impl IpRange {
    /// Parses `address[/prefix]`.
    pub fn parse(text: &str) -> Option<IpRange> {
        let (address, prefix) = match text.split_once('/') {
            Some((address, prefix)) => (address, Some(prefix)),
            None => (text, None),
        };
        let network: IpAddr = address.trim().parse().ok()?;
        let bits = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p.trim().parse::<u8>().ok().filter(|p| *p <= bits)?,
            None => bits,
        };
        Some(IpRange { network, prefix })
    }

    /// True when `ip` is in the range.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.network, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// The client's address: the peer's, or from `X-Forwarded-For` when the peer is trusted.
pub fn client_ip(peer: SocketAddr, headers: &HeaderMap, trusted: &[IpRange]) -> IpAddr {
    let is_trusted = |ip: IpAddr| trusted.iter().any(|range| range.contains(ip));
    let mut ip = peer.ip();
    if !is_trusted(ip) {
        return ip;
    }
    let forwarded = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect::<Vec<_>>();
    for entry in forwarded.iter().rev() {
        match entry.parse::<IpAddr>() {
            Ok(hop) => {
                ip = hop;
                if !is_trusted(hop) {
                    break;
                }
            }
            // A malformed entry: stop at the last address known good.
            Err(_) => break,
        }
    }
    ip
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn headers(values: &[&str]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for v in values {
            map.append("x-forwarded-for", v.parse().unwrap());
        }
        map
    }

    #[test]
    fn ranges() {
        let r = IpRange::parse("10.0.0.0/8").unwrap();
        assert!(r.contains("10.200.1.2".parse().unwrap()));
        assert!(!r.contains("11.0.0.1".parse().unwrap()));
        assert!(r.contains("::ffff:10.0.0.1".parse().unwrap()));
        let one = IpRange::parse("192.0.2.7").unwrap();
        assert!(one.contains("192.0.2.7".parse().unwrap()));
        assert!(!one.contains("192.0.2.8".parse().unwrap()));
        assert!(
            IpRange::parse("::/0")
                .unwrap()
                .contains("2001:db8::1".parse().unwrap())
        );
        assert!(
            IpRange::parse("0.0.0.0/0")
                .unwrap()
                .contains("8.8.8.8".parse().unwrap())
        );
        for bad in ["10.0.0.0/33", "example.com", "10.0.0/8", "::1/129", ""] {
            assert_eq!(IpRange::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn forwarded_only_from_trusted_proxies() {
        let trusted = [IpRange::parse("10.0.0.0/8").unwrap()];
        let proxy: SocketAddr = "10.0.0.5:4000".parse().unwrap();
        let stranger: SocketAddr = "203.0.113.9:4000".parse().unwrap();
        let shopper: IpAddr = "198.51.100.20".parse().unwrap();
        // From a stranger the header is ignored.
        assert_eq!(
            client_ip(stranger, &headers(&["198.51.100.20"]), &trusted),
            stranger.ip()
        );
        // From the proxy: the right-most untrusted entry; what the client wrote to the left of
        // it does not count.
        assert_eq!(
            client_ip(proxy, &headers(&["1.2.3.4, 198.51.100.20"]), &trusted),
            shopper
        );
        assert_eq!(
            client_ip(
                proxy,
                &headers(&["1.2.3.4", "198.51.100.20, 10.0.0.9"]),
                &trusted
            ),
            shopper
        );
        assert_eq!(client_ip(proxy, &headers(&[]), &trusted), proxy.ip());
        assert_eq!(
            client_ip(proxy, &headers(&["junk, 198.51.100.20"]), &trusted),
            shopper
        );
        assert_eq!(
            client_ip(proxy, &headers(&["198.51.100.20, junk"]), &trusted),
            proxy.ip()
        );
    }
}
