//! The proxy variables, read as curl reads them (the rules are on
//! [`Proxy::from_vars`]); the variables come from a function, so tests pass their own
//! instead of changing the process environment.

use std::net::IpAddr;

use super::Proxy;
use crate::error::{Error, Result};
use crate::io::url::{Target, TargetHost};

/// The proxy for `target` from the variables `var` gives, `None` for direct.
pub(crate) fn proxy_for(
    target: &Target,
    var: impl Fn(&str) -> Option<String>,
) -> Result<Option<Proxy>> {
    let set = |name: &str| var(name).filter(|v| !v.trim().is_empty());
    let cgi = set("REQUEST_METHOD").is_some();
    let names: &[&str] = match (target.secure, cgi) {
        (true, _) => &["https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"],
        (false, false) => &["http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"],
        (false, true) => &["http_proxy", "all_proxy", "ALL_PROXY"],
    };
    let Some((name, value)) = names.iter().find_map(|name| set(name).map(|v| (name, v))) else {
        return Ok(None);
    };
    if let Some(list) = set("no_proxy").or_else(|| set("NO_PROXY"))
        && no_proxy_matches(&list, &target.host)
    {
        return Ok(None);
    }
    match Proxy::parse(&value) {
        Ok(proxy) => Ok(Some(proxy)),
        Err(Error::Syntax(why)) => Err(Error::Syntax(format!("{name}: {why}"))),
        Err(other) => Err(other),
    }
}

/// Whether the NO_PROXY list `list` names `host` (curl's `Curl_check_noproxy`).
fn no_proxy_matches(list: &str, host: &TargetHost) -> bool {
    if list.trim() == "*" {
        return true;
    }
    let entries = list
        .split(|c: char| c == ',' || c.is_ascii_whitespace())
        .filter(|e| !e.is_empty());
    match host {
        TargetHost::Addr(ip) => entries.into_iter().any(|entry| ip_matches(entry, *ip)),
        TargetHost::Domain(name) => {
            let name = name.trim_end_matches('.');
            entries.into_iter().any(|entry| {
                let entry = entry.trim_start_matches('.').trim_end_matches('.');
                if entry.is_empty() || entry.len() > name.len() {
                    return false;
                }
                let start = name.len() - entry.len();
                // `start` is a char boundary when the tail matches byte for byte.
                name.as_bytes()[start..].eq_ignore_ascii_case(entry.as_bytes())
                    && (start == 0 || name.as_bytes()[start - 1] == b'.')
            })
        }
    }
}

/// `entry` is an address (`127.0.0.1`, `::1`, `[::1]`) or a network (`10.0.0.0/8`).
fn ip_matches(entry: &str, ip: IpAddr) -> bool {
    let entry = entry.trim_start_matches('[');
    let (address, bits) = match entry.split_once('/') {
        Some((address, bits)) => match bits.parse::<u8>() {
            Ok(bits) => (address, Some(bits)),
            Err(_) => return false,
        },
        None => (entry, None),
    };
    let Ok(network) = address.trim_end_matches(']').parse::<IpAddr>() else {
        return false;
    };
    match (network, ip) {
        (IpAddr::V4(n), IpAddr::V4(a)) => prefix_matches(&n.octets(), &a.octets(), bits, 32),
        (IpAddr::V6(n), IpAddr::V6(a)) => prefix_matches(&n.octets(), &a.octets(), bits, 128),
        _ => false,
    }
}

fn prefix_matches(network: &[u8], address: &[u8], bits: Option<u8>, width: u8) -> bool {
    let bits = match bits {
        None => width,
        Some(bits) if bits <= width => bits,
        Some(_) => return false,
    };
    let whole = usize::from(bits / 8);
    if network[..whole] != address[..whole] {
        return false;
    }
    let rest = bits % 8;
    rest == 0 || {
        let mask = 0xffu8 << (8 - rest);
        network[whole] & mask == address[whole] & mask
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(s: &str) -> TargetHost {
        match s.parse() {
            Ok(ip) => TargetHost::Addr(ip),
            Err(_) => TargetHost::Domain(s.into()),
        }
    }

    #[test]
    fn no_proxy_as_curl_matches_it() {
        let cases = [
            ("*", "anything.example", true),
            ("example.com", "example.com", true),
            ("example.com", "a.b.EXAMPLE.com", true),
            (".example.com", "example.com", true),
            ("example.com", "badexample.com", false),
            ("a.example.com", "example.com", false),
            ("foo, bar example.com,", "x.example.com", true),
            ("example.com.", "example.com.", true),
            ("localhost", "127.0.0.1", false),
            ("127.0.0.1", "127.0.0.1", true),
            ("127.0.0.1", "localhost", false),
            ("127.0.0.0/8", "127.9.8.7", true),
            ("10.0.0.0/9", "10.128.0.1", false),
            ("10.0.0.0/9", "10.127.0.1", true),
            ("10.0.0.0/33", "10.0.0.0", false),
            ("::1", "::1", true),
            ("[::1]", "::1", true),
            ("fe80::/10", "febf::1", true),
            ("fe80::/10", "fec0::1", false),
            ("127.0.0.1", "::1", false),
            ("*.example.com", "a.example.com", false),
            ("a,*", "b", false),
            ("", "example.com", false),
        ];
        for (list, name, expected) in cases {
            assert_eq!(
                no_proxy_matches(list, &host(name)),
                expected,
                "{list:?} {name:?}"
            );
        }
    }

    fn vars(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        |name| {
            pairs
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| v.to_string())
        }
    }

    fn proxy(url: &str, pairs: &'static [(&'static str, &'static str)]) -> Option<String> {
        proxy_for(&Target::parse(url).unwrap(), vars(pairs))
            .unwrap()
            .map(|p| p.to_string())
    }

    #[test]
    fn the_scheme_picks_the_variable_lowercase_first_then_all_proxy() {
        let env = &[
            ("http_proxy", "http://lower:1"),
            ("HTTP_PROXY", "http://upper:2"),
            ("HTTPS_PROXY", "socks5://secure:3"),
            ("ALL_PROXY", "socks5h://all:4"),
        ];
        assert_eq!(proxy("ws://h/", env).as_deref(), Some("http://lower:1"));
        assert_eq!(proxy("wss://h/", env).as_deref(), Some("socks5://secure:3"));
        let env = &[("HTTP_PROXY", "upper:2"), ("all_proxy", "socks5h://all:4")];
        assert_eq!(proxy("ws://h/", env).as_deref(), Some("http://upper:2"));
        assert_eq!(proxy("wss://h/", env).as_deref(), Some("socks5h://all:4"));
        assert_eq!(proxy("ws://h/", &[]), None);
        assert_eq!(proxy("ws://h/", &[("http_proxy", " ")]), None);
    }

    #[test]
    fn cgi_ignores_http_proxy() {
        let env = &[("HTTP_PROXY", "http://evil:1"), ("REQUEST_METHOD", "GET")];
        assert_eq!(proxy("ws://h/", env), None);
        let env = &[
            ("HTTP_PROXY", "http://evil:1"),
            ("REQUEST_METHOD", "GET"),
            ("ALL_PROXY", "http://good:2"),
        ];
        assert_eq!(proxy("ws://h/", env).as_deref(), Some("http://good:2"));
    }

    #[test]
    fn no_proxy_lowercase_first_and_loopback_not_special() {
        let env = &[
            ("ALL_PROXY", "http://p:1"),
            ("no_proxy", "internal.example"),
            ("NO_PROXY", "*"),
        ];
        assert_eq!(proxy("ws://db.internal.example/", env), None);
        assert!(proxy("ws://example.com/", env).is_some());
        assert!(proxy("ws://127.0.0.1:9/", &[("ALL_PROXY", "http://p:1")]).is_some());
        assert!(proxy("ws://localhost:9/", &[("ALL_PROXY", "http://p:1")]).is_some());
    }

    #[test]
    fn a_bad_variable_is_a_syntax_error_naming_it() {
        let target = Target::parse("wss://h/").unwrap();
        match proxy_for(&target, vars(&[("HTTPS_PROXY", "ftp://x")])) {
            Err(Error::Syntax(why)) => assert!(why.starts_with("HTTPS_PROXY: "), "{why}"),
            other => panic!("{other:?}"),
        }
    }
}
