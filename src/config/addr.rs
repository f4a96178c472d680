//! Socket addresses of `listen` and `metrics` lines.

use std::net::{IpAddr, SocketAddr};

use super::words::quoted;

/// The NTP port, used when a `listen` address has none.
const NTP_PORT: u16 = 123;

/// `ADDR[:PORT]`: `192.0.2.1`, `192.0.2.1:123`, `::1`, `[::1]`, `[::1]:123`.
pub(super) fn parse_listen(token: &str) -> Result<SocketAddr, String> {
    let addr = if let Ok(sa) = token.parse::<SocketAddr>() {
        sa
    } else if let Some(ip) = bare_ip(token) {
        SocketAddr::new(ip, NTP_PORT)
    } else {
        return Err(format!(
            "listen: expected an IP address with an optional :PORT \
             (192.0.2.1, 192.0.2.1:123, ::1, [::1]:123), got {} (names are not resolved)",
            quoted(token)
        ));
    };
    nonzero_port("listen", token, addr)
}

/// `ADDR:PORT`, the port required: `127.0.0.1:9123`, `[::1]:9123`.
pub(super) fn parse_metrics(token: &str) -> Result<SocketAddr, String> {
    match token.parse::<SocketAddr>() {
        Ok(addr) => nonzero_port("metrics", token, addr),
        Err(_) if bare_ip(token).is_some() => Err(format!(
            "metrics: a port is required, e.g. 127.0.0.1:9123 or [::1]:9123, got {}",
            quoted(token)
        )),
        Err(_) => Err(format!(
            "metrics: expected ADDRESS:PORT such as 127.0.0.1:9123 or [::1]:9123, got {}",
            quoted(token)
        )),
    }
}

/// An address without a port; IPv6 may be in brackets.
fn bare_ip(token: &str) -> Option<IpAddr> {
    match token.strip_prefix('[').and_then(|t| t.strip_suffix(']')) {
        Some(inner) => inner.parse::<std::net::Ipv6Addr>().ok().map(IpAddr::V6),
        None => token.parse().ok(),
    }
}

fn nonzero_port(directive: &str, token: &str, addr: SocketAddr) -> Result<SocketAddr, String> {
    if addr.port() == 0 {
        return Err(format!(
            "{directive}: port 0 is not allowed in {}; give a port 1..=65535",
            quoted(token)
        ));
    }
    Ok(addr)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_forms() {
        for (text, want) in [
            ("192.0.2.1", "192.0.2.1:123"),
            ("192.0.2.1:1123", "192.0.2.1:1123"),
            ("0.0.0.0", "0.0.0.0:123"),
            ("::1", "[::1]:123"),
            ("[::1]", "[::1]:123"),
            ("[::1]:123", "[::1]:123"),
            ("[2001:db8::5]:4123", "[2001:db8::5]:4123"),
            ("::", "[::]:123"),
        ] {
            assert_eq!(parse_listen(text).unwrap().to_string(), want, "{text}");
        }
        for bad in [
            "localhost",
            "192.0.2.1:",
            "192.0.2.1:70000",
            "192.0.2.1:0",
            "[192.0.2.1]",
            "::1:123x",
            "[::1]:",
            "",
        ] {
            assert!(parse_listen(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn metrics_forms() {
        assert_eq!(
            parse_metrics("127.0.0.1:9123").unwrap().to_string(),
            "127.0.0.1:9123"
        );
        assert_eq!(
            parse_metrics("[::1]:9123").unwrap().to_string(),
            "[::1]:9123"
        );
        let e = parse_metrics("127.0.0.1").unwrap_err();
        assert!(e.contains("port is required"), "{e}");
        assert!(parse_metrics("::1")
            .unwrap_err()
            .contains("port is required"));
        assert!(parse_metrics("localhost:9123").is_err());
        assert!(parse_metrics("127.0.0.1:0").is_err());
    }
}
