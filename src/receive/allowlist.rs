//! Address allowlists: CIDR ranges, and which `X-Forwarded-For` entry to
//! believe.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;

use http::header::HeaderName;
use http::HeaderMap;

/// `X-Forwarded-For`.
pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// Why a text is not a valid [`IpRange`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidIpRange {
    /// The part before `/` is not an IPv4 or IPv6 address.
    #[error("{range:?} is not an IP address or CIDR range")]
    Address {
        /// The text as given.
        range: String,
    },
    /// The prefix length is not a number within the address's size (32 for
    /// IPv4, 128 for IPv6).
    #[error("{range:?} has an invalid prefix length")]
    Prefix {
        /// The text as given.
        range: String,
    },
    /// Bits are set after the prefix (`10.0.0.1/8`): the range is ambiguous,
    /// probably a typo for `10.0.0.1/32` or `10.0.0.0/8`.
    #[error("{range:?} has address bits set after the prefix; did you mean {suggestion}?")]
    HostBits {
        /// The text as given.
        range: String,
        /// The range with those bits cleared.
        suggestion: String,
    },
}

/// One CIDR range of addresses, such as `192.30.252.0/22` or
/// `2a0a:a440::/29`; a bare address is a range of one.
///
/// IPv4-mapped IPv6 addresses (`::ffff:192.0.2.1`), as a dual-stack listener
/// reports IPv4 peers, match the IPv4 ranges.
///
/// ```
/// use hookway::receive::IpRange;
///
/// let github: IpRange = "192.30.252.0/22".parse()?;
/// assert!(github.contains("192.30.255.254".parse()?));
/// assert!(github.contains("::ffff:192.30.252.1".parse()?));
/// assert!(!github.contains("192.30.251.255".parse()?));
/// assert!("10.0.0.1/8".parse::<IpRange>().is_err()); // bits after the prefix
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct IpRange {
    network: IpAddr,
    prefix: u8,
}

impl IpRange {
    /// The range of `prefix` leading bits of `network`.
    ///
    /// Fails if `prefix` exceeds the address size, or if `network` has bits
    /// set after the prefix.
    pub fn new(network: IpAddr, prefix: u8) -> Result<Self, InvalidIpRange> {
        // An IPv4-mapped range (`::ffff:192.0.2.0/120`) is the IPv4 range it
        // maps, since peers are compared in canonical form.
        let (network, prefix) = match network {
            IpAddr::V6(v6) if prefix >= 96 => match v6.to_ipv4_mapped() {
                Some(v4) => (IpAddr::V4(v4), prefix - 96),
                None => (network, prefix),
            },
            _ => (network, prefix),
        };
        let bits = match network {
            IpAddr::V4(_) => 32,
            IpAddr::V6(_) => 128,
        };
        let text = || format!("{network}/{prefix}");
        if prefix > bits {
            return Err(InvalidIpRange::Prefix { range: text() });
        }
        let masked = mask(network, prefix);
        if masked != network {
            return Err(InvalidIpRange::HostBits {
                range: text(),
                suggestion: format!("{masked}/{prefix}"),
            });
        }
        Ok(Self { network, prefix })
    }

    /// The range holding exactly `addr`.
    pub fn single(addr: IpAddr) -> Self {
        let addr = addr.to_canonical();
        let prefix = if addr.is_ipv4() { 32 } else { 128 };
        Self {
            network: addr,
            prefix,
        }
    }

    /// The first address of the range.
    pub fn network(&self) -> IpAddr {
        self.network
    }

    /// The number of leading bits that every address in the range shares.
    pub fn prefix_len(&self) -> u8 {
        self.prefix
    }

    /// Whether `addr` lies in the range.
    pub fn contains(&self, addr: IpAddr) -> bool {
        let addr = addr.to_canonical();
        addr.is_ipv4() == self.network.is_ipv4() && mask(addr, self.prefix) == self.network
    }
}

fn mask(addr: IpAddr, prefix: u8) -> IpAddr {
    match addr {
        IpAddr::V4(v4) => {
            let bits = u32::from(v4);
            let kept = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V4(Ipv4Addr::from(bits & kept))
        }
        IpAddr::V6(v6) => {
            let bits = u128::from(v6);
            let kept = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V6(Ipv6Addr::from(bits & kept))
        }
    }
}

impl FromStr for IpRange {
    type Err = InvalidIpRange;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (addr, prefix) = match text.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (text, None),
        };
        let network: IpAddr = addr.parse().map_err(|_| InvalidIpRange::Address {
            range: text.to_owned(),
        })?;
        match prefix {
            None => Ok(Self::single(network)),
            Some(prefix) => {
                // Digits only: no sign, no spaces.
                let prefix = (!prefix.is_empty()
                    && prefix.len() <= 3
                    && prefix.bytes().all(|b| b.is_ascii_digit()))
                .then(|| prefix.parse::<u8>().ok())
                .flatten()
                .ok_or_else(|| InvalidIpRange::Prefix {
                    range: text.to_owned(),
                })?;
                Self::new(network, prefix).map_err(|e| match e {
                    InvalidIpRange::HostBits { suggestion, .. } => InvalidIpRange::HostBits {
                        range: text.to_owned(),
                        suggestion,
                    },
                    _ => InvalidIpRange::Prefix {
                        range: text.to_owned(),
                    },
                })
            }
        }
    }
}

impl fmt::Display for IpRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

impl fmt::Debug for IpRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl From<IpAddr> for IpRange {
    fn from(addr: IpAddr) -> Self {
        Self::single(addr)
    }
}

/// Which client addresses may deliver webhooks.
///
/// Some providers publish the addresses they send from (GitHub's `hooks`
/// ranges from its meta API, Stripe's list of webhook IPs); refusing
/// everything else is a second line of defence behind the signature.
///
/// # Proxies
///
/// By default the client is the peer of the TCP connection and
/// `X-Forwarded-For` is ignored, since anyone can send that header. Behind a
/// load balancer or reverse proxy, name it with
/// [`trust_proxies`](Self::trust_proxies): when (and only when) the peer is
/// one of those, the client is the right-most `X-Forwarded-For` address that
/// is not itself a trusted proxy. Entries to the left of it were written by
/// the client and prove nothing. An entry that is not an address, where the
/// walk needs it, means the client is unknown and the request is refused.
///
/// ```
/// use std::net::IpAddr;
/// use hookway::receive::IpAllowlist;
/// use http::HeaderMap;
///
/// let allow = IpAllowlist::new(["192.30.252.0/22", "2a0a:a440::/29"])?
///     .trust_proxies(["10.0.0.0/8"])?;
///
/// let mut headers = HeaderMap::new();
/// headers.insert("x-forwarded-for", "203.0.113.9, 192.30.252.7, 10.1.2.3".parse()?);
///
/// // From the load balancer: the right-most untrusted entry counts.
/// let balancer: IpAddr = "10.0.0.2".parse()?;
/// assert_eq!(allow.client_ip(balancer, &headers), Some("192.30.252.7".parse()?));
/// assert!(allow.allows(balancer, &headers));
///
/// // Straight from the internet: the header is ignored.
/// let direct: IpAddr = "203.0.113.9".parse()?;
/// assert!(!allow.allows(direct, &headers));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IpAllowlist {
    allowed: Vec<IpRange>,
    trusted_proxies: Vec<IpRange>,
}

impl IpAllowlist {
    /// An allowlist of `ranges` (CIDR text or bare addresses); fails on the
    /// first invalid one. No proxy is trusted.
    pub fn new<I, S>(ranges: I) -> Result<Self, InvalidIpRange>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        Ok(Self::from_ranges(parse_all(ranges)?))
    }

    /// An allowlist of parsed ranges.
    pub fn from_ranges(ranges: impl IntoIterator<Item = IpRange>) -> Self {
        Self {
            allowed: ranges.into_iter().collect(),
            trusted_proxies: Vec::new(),
        }
    }

    /// Trusts the proxies in `ranges` to report the client in
    /// `X-Forwarded-For` (see [Proxies](#proxies)). Adds to any trusted
    /// before.
    pub fn trust_proxies<I, S>(mut self, ranges: I) -> Result<Self, InvalidIpRange>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        self.trusted_proxies.extend(parse_all(ranges)?);
        Ok(self)
    }

    /// The allowed ranges.
    pub fn ranges(&self) -> &[IpRange] {
        &self.allowed
    }

    /// The trusted proxies.
    pub fn trusted_proxies(&self) -> &[IpRange] {
        &self.trusted_proxies
    }

    fn is_trusted(&self, addr: IpAddr) -> bool {
        self.trusted_proxies.iter().any(|r| r.contains(addr))
    }

    /// The client's address for a request from `peer` with `headers`, or
    /// `None` if a trusted proxy forwarded it with an `X-Forwarded-For`
    /// entry that is not an address where one was needed.
    pub fn client_ip(&self, peer: IpAddr, headers: &HeaderMap) -> Option<IpAddr> {
        let peer = peer.to_canonical();
        if !self.is_trusted(peer) {
            return Some(peer);
        }
        let mut entries: Vec<&[u8]> = Vec::new();
        for value in headers.get_all(X_FORWARDED_FOR) {
            entries.extend(
                value
                    .as_bytes()
                    .split(|b| *b == b',')
                    .map(<[u8]>::trim_ascii)
                    .filter(|e| !e.is_empty()),
            );
        }
        let mut leftmost = None;
        for entry in entries.iter().rev() {
            let addr = parse_forwarded(entry)?;
            if !self.is_trusted(addr) {
                return Some(addr);
            }
            leftmost = Some(addr);
        }
        // Every hop is trusted: the request began at the first of them (or
        // at the peer itself, without the header).
        Some(leftmost.unwrap_or(peer))
    }

    /// Whether a request from `peer` with `headers` comes from an allowed
    /// client.
    pub fn allows(&self, peer: IpAddr, headers: &HeaderMap) -> bool {
        self.client_ip(peer, headers)
            .is_some_and(|client| self.allowed.iter().any(|r| r.contains(client)))
    }
}

fn parse_all<I, S>(ranges: I) -> Result<Vec<IpRange>, InvalidIpRange>
where
    I: IntoIterator<Item = S>,
    S: AsRef<str>,
{
    ranges.into_iter().map(|r| r.as_ref().parse()).collect()
}

/// One `X-Forwarded-For` entry: an address, optionally with a port
/// (`192.0.2.1:443`, `[2001:db8::1]:443`).
fn parse_forwarded(entry: &[u8]) -> Option<IpAddr> {
    let text = std::str::from_utf8(entry).ok()?;
    let addr = text
        .parse::<IpAddr>()
        .ok()
        .or_else(|| text.parse::<SocketAddr>().ok().map(|s| s.ip()))?;
    Some(addr.to_canonical())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    fn xff(values: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for v in values {
            headers.append(X_FORWARDED_FOR, v.parse().unwrap());
        }
        headers
    }

    #[test]
    fn ranges_parse_and_match() {
        let r: IpRange = "10.0.0.0/8".parse().unwrap();
        assert!(r.contains(ip("10.255.0.1")));
        assert!(!r.contains(ip("11.0.0.0")));
        assert!(!r.contains(ip("::a00:1")));
        let all: IpRange = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains(ip("203.0.113.1")));
        assert!(!all.contains(ip("2001:db8::1")));
        let v6: IpRange = "2001:db8::/32".parse().unwrap();
        assert!(v6.contains(ip("2001:db8:ffff::1")));
        assert!(!v6.contains(ip("2001:db9::1")));
        let one: IpRange = "127.0.0.1".parse().unwrap();
        assert_eq!(one.to_string(), "127.0.0.1/32");
        assert!(one.contains(ip("::ffff:127.0.0.1")));
        // A mapped range is the IPv4 range it maps.
        let mapped: IpRange = "::ffff:192.0.2.0/120".parse().unwrap();
        assert_eq!(mapped.to_string(), "192.0.2.0/24");
        assert!(mapped.contains(ip("192.0.2.77")));
    }

    #[test]
    fn bad_ranges_are_refused() {
        for bad in [
            "",
            "10.0.0.0/",
            "10.0.0.0/33",
            "10.0.0.0/-1",
            "10.0.0.0/ 8",
            "x/8",
        ] {
            assert!(bad.parse::<IpRange>().is_err(), "{bad}");
        }
        assert!(matches!(
            "2001:db8::/129".parse::<IpRange>(),
            Err(InvalidIpRange::Prefix { .. })
        ));
        assert_eq!(
            "10.0.0.1/8".parse::<IpRange>(),
            Err(InvalidIpRange::HostBits {
                range: "10.0.0.1/8".into(),
                suggestion: "10.0.0.0/8".into()
            })
        );
    }

    #[test]
    fn forwarded_for_is_ignored_unless_the_peer_is_trusted() {
        let list = IpAllowlist::new(["203.0.113.0/24"]).unwrap();
        let spoofed = xff(&["203.0.113.5"]);
        assert_eq!(
            list.client_ip(ip("198.51.100.1"), &spoofed),
            Some(ip("198.51.100.1"))
        );
        assert!(!list.allows(ip("198.51.100.1"), &spoofed));
    }

    #[test]
    fn right_most_untrusted_entry_is_the_client() {
        let list = IpAllowlist::new(["203.0.113.0/24"])
            .unwrap()
            .trust_proxies(["10.0.0.0/8", "2001:db8::/32"])
            .unwrap();
        let proxy = ip("10.0.0.1");
        // Client-written junk on the left does not matter.
        let h = xff(&["not-an-ip, 198.51.100.1", "203.0.113.5, 10.9.9.9"]);
        assert_eq!(list.client_ip(proxy, &h), Some(ip("203.0.113.5")));
        assert!(list.allows(proxy, &h));
        // A forged allowed address to the left of the real client does not help.
        let h = xff(&["203.0.113.5, 198.51.100.1"]);
        assert_eq!(list.client_ip(proxy, &h), Some(ip("198.51.100.1")));
        assert!(!list.allows(proxy, &h));
        // Ports and brackets.
        let h = xff(&["[2001:db8::7]:443, 203.0.113.6:5000"]);
        assert_eq!(
            list.client_ip(ip("2001:db8::1"), &h),
            Some(ip("203.0.113.6"))
        );
        // Junk where the client should be: unknown, refused.
        let h = xff(&["203.0.113.5, unknown"]);
        assert_eq!(list.client_ip(proxy, &h), None);
        assert!(!list.allows(proxy, &h));
        // No header: the proxy itself is the client.
        assert_eq!(list.client_ip(proxy, &HeaderMap::new()), Some(proxy));
        // Only trusted hops: the first of them.
        let h = xff(&["10.1.1.1, 10.2.2.2"]);
        assert_eq!(list.client_ip(proxy, &h), Some(ip("10.1.1.1")));
    }
}
