//! chrony's `allow` and `deny`, turned into tachyon's access rules.
//!
//! chronyd serves no client at all unless `allow` says so; `allow` with no
//! argument allows every address, `allow 0/0` every IPv4 one, `allow ::/0`
//! every IPv6 one. The most specific subnet that covers a client decides.
//! A later directive for the same subnet replaces the earlier one, and the
//! `all` form (`allow all 10/8`) also removes every earlier, more specific
//! rule inside its subnet. chronyd keeps its rules in tables of 4-bit
//! levels, where a less specific directive given later can overwrite part of
//! a more specific one in the same level (`deny 1.2.3.0/28` then
//! `allow 1.2.3.0/25`); tachyon keeps the most specific rule in every case.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::restrict::{self, Family, RestrictFlags, RestrictRule, RestrictTarget};
use super::words::quoted;

/// What `allow`/`deny` set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Permission {
    Allow,
    Deny,
}

impl Permission {
    fn as_str(self) -> &'static str {
        match self {
            Permission::Allow => "allow",
            Permission::Deny => "deny",
        }
    }
}

/// A subnet as an ordered key: (IPv6?, network bits, prefix length). IPv4
/// networks are kept in the low 32 bits, so every subnet's more specific
/// subnets lie in one range of keys.
type Key = (bool, u128, u8);

/// The access table being built, directive by directive.
#[derive(Debug, Default)]
pub(super) struct Access {
    /// Every subnet given, with its permission and the line of the
    /// directive that set it last. Prefix 0 is a family's default.
    entries: BTreeMap<Key, (Permission, usize)>,
    /// Whether any `allow` directive was seen.
    pub any_allow: bool,
}

impl Access {
    /// Applies one `allow`/`deny` line, the `line`-th of its file.
    pub fn apply(
        &mut self,
        permission: Permission,
        args: &[&str],
        line: usize,
    ) -> Result<(), String> {
        let directive = permission.as_str();
        let (all, subnet_token) = match args {
            [] => (false, None),
            ["all"] => (true, None),
            ["all", subnet] => (true, Some(*subnet)),
            [subnet] => (false, Some(*subnet)),
            [_, extra @ ..] => {
                return Err(format!(
                    "{directive}: expected [all] [SUBNET], got extra {}",
                    quoted(extra[0])
                ))
            }
        };
        if permission == Permission::Allow {
            self.any_allow = true;
        }
        let subnet = match subnet_token {
            None => None,
            Some(token) => Some(parse_subnet(directive, token)?),
        };
        let keys: Vec<Key> = match subnet {
            None => vec![(false, 0, 0), (true, 0, 0)],
            Some((addr, len)) => vec![key_of(directive, subnet_token.unwrap_or(""), addr, len)?],
        };
        for key in keys {
            if all {
                self.remove_within(key);
            }
            self.entries.insert(key, (permission, line));
        }
        Ok(())
    }

    /// Removes the rules strictly more specific than `key` inside it.
    fn remove_within(&mut self, (v6, net, len): Key) {
        let bits = if v6 { 128 } else { 32 };
        let host = if len == 0 {
            if v6 {
                u128::MAX
            } else {
                u128::from(u32::MAX)
            }
        } else {
            (1u128 << (bits - u32::from(len))) - 1
        };
        let inside: Vec<Key> = self
            .entries
            .range((v6, net, 0)..=(v6, net | host, u8::MAX))
            .map(|(k, _)| *k)
            .filter(|&(_, _, l)| l > len)
            .collect();
        for k in inside {
            self.entries.remove(&k);
        }
    }

    /// The rules: a default for each family (deny unless set, with line 0),
    /// then every subnet, with the line of the directive that set it.
    /// Allowed clients get `allowed` flags (rate limiting when the file has
    /// `ratelimit`); denied ones are ignored, as chronyd ignores them.
    pub fn rules(&self, allowed: RestrictFlags) -> Vec<RestrictRule> {
        let flags = |p: Permission| match p {
            Permission::Allow => allowed,
            Permission::Deny => RestrictFlags::IGNORE,
        };
        let mut rules = Vec::with_capacity(self.entries.len() + 2);
        for (v6, family) in [(false, Family::V4), (true, Family::V6)] {
            if !self.entries.contains_key(&(v6, 0, 0)) {
                rules.push(RestrictRule {
                    target: RestrictTarget::Default { family },
                    flags: RestrictFlags::IGNORE,
                    line: 0,
                });
            }
        }
        for (&(v6, net, len), &(permission, line)) in &self.entries {
            let target = match (v6, len) {
                (false, 0) => RestrictTarget::Default { family: Family::V4 },
                (true, 0) => RestrictTarget::Default { family: Family::V6 },
                (false, _) => RestrictTarget::Net {
                    // IPv4 keys keep the address in the low 32 bits.
                    addr: IpAddr::V4(Ipv4Addr::from(net as u32)),
                    prefix_len: len,
                },
                (true, _) => RestrictTarget::Net {
                    addr: IpAddr::V6(Ipv6Addr::from(net)),
                    prefix_len: len,
                },
            };
            rules.push(RestrictRule {
                target,
                flags: flags(permission),
                line,
            });
        }
        rules
    }
}

/// The key of `addr/len`, through the same rule as ntp.conf's `restrict`
/// (host bits cleared; an IPv4-mapped network is the IPv4 one it carries).
fn key_of(directive: &str, token: &str, addr: IpAddr, len: u8) -> Result<Key, String> {
    Ok(match restrict::network(directive, token, addr, len)? {
        RestrictTarget::Default { family } => (family == Family::V6, 0, 0),
        RestrictTarget::Net { addr, prefix_len } => match addr {
            IpAddr::V4(a) => (false, u128::from(u32::from(a)), prefix_len),
            IpAddr::V6(a) => (true, u128::from(a), prefix_len),
        },
    })
}

/// chrony's subnet forms: an address with an optional `/LEN`, or 1 to 3
/// decimal numbers (`192.168` is 192.168.0.0/16, `10` is 10.0.0.0/8) with
/// an optional `/LEN`. A host name is refused: it is not resolved while the
/// file is read.
fn parse_subnet(directive: &str, token: &str) -> Result<(IpAddr, u8), String> {
    let (addr_text, len_text) = match token.split_once('/') {
        Some((a, l)) => (a, Some(l)),
        None => (token, None),
    };
    let parsed = match addr_text.parse::<IpAddr>() {
        Ok(ip) => Some((ip, if ip.is_ipv4() { 32 } else { 128 })),
        Err(_) => shortened_ipv4(addr_text),
    };
    let Some((addr, implied)) = parsed else {
        let looks_named =
            addr_text.chars().any(|c| c.is_ascii_alphabetic()) && !addr_text.contains(':');
        return Err(if looks_named && len_text.is_none() {
            format!(
                "{directive}: {}: host names are not resolved while the file is read; \
                 write the address",
                quoted(token)
            )
        } else {
            format!(
                "{directive}: expected [all] and a subnet such as 192.168.0.0/16, 192.168, \
                 2001:db8::/32 or an address, got {}",
                quoted(token)
            )
        });
    };
    let max = if addr.is_ipv4() { 32 } else { 128 };
    let len = match len_text {
        None => implied,
        Some(text) => match text.parse::<u8>() {
            Ok(n) if n <= max => n,
            _ => {
                return Err(format!(
                    "{directive}: {}: the prefix length must be 0..={max}",
                    quoted(token)
                ))
            }
        },
    };
    Ok((addr, len))
}

/// `a`, `a.b` or `a.b.c` (each 0..=255): the IPv4 network of 8, 16 or 24
/// bits they give.
fn shortened_ipv4(text: &str) -> Option<(IpAddr, u8)> {
    let parts: Vec<&str> = text.split('.').collect();
    if parts.len() > 3 {
        return None;
    }
    let mut octets = [0u8; 4];
    for (i, part) in parts.iter().enumerate() {
        if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        octets[i] = part.parse().ok()?;
    }
    Some((IpAddr::V4(Ipv4Addr::from(octets)), 8 * parts.len() as u8))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(lines: &[&str]) -> Result<Access, String> {
        let mut access = Access::default();
        for (i, line) in lines.iter().enumerate() {
            let words: Vec<&str> = line.split_whitespace().collect();
            let permission = match words[0] {
                "allow" => Permission::Allow,
                _ => Permission::Deny,
            };
            access.apply(permission, &words[1..], i + 1)?;
        }
        Ok(access)
    }

    /// (target as text, allowed?) of every rule.
    fn shown(lines: &[&str]) -> Vec<(String, bool)> {
        let rules = table(lines).unwrap().rules(RestrictFlags::LIMITED);
        rules
            .iter()
            .map(|r| {
                (
                    r.target.to_string(),
                    !r.flags.contains(RestrictFlags::IGNORE),
                )
            })
            .collect()
    }

    fn s(target: &str, allowed: bool) -> (String, bool) {
        (target.to_string(), allowed)
    }

    #[test]
    fn nothing_allowed_denies_both_families() {
        assert_eq!(shown(&[]), [s("-4 default", false), s("-6 default", false)]);
        assert!(!table(&[]).unwrap().any_allow);
        assert!(!table(&["deny 10/8"]).unwrap().any_allow);
    }

    #[test]
    fn subnet_forms() {
        assert_eq!(
            shown(&["allow"]),
            [s("-4 default", true), s("-6 default", true)]
        );
        assert_eq!(
            shown(&["allow 0/0"]),
            [s("-6 default", false), s("-4 default", true)]
        );
        assert_eq!(
            shown(&["allow ::/0"]),
            [s("-4 default", false), s("-6 default", true)]
        );
        for (subnet, want) in [
            ("1.2.3.4", "1.2.3.4/32"),
            ("3.4.5.0/24", "3.4.5.0/24"),
            ("3.4.5", "3.4.5.0/24"),
            ("192.168", "192.168.0.0/16"),
            ("10", "10.0.0.0/8"),
            ("192.168/16", "192.168.0.0/16"),
            ("172.16/12", "172.16.0.0/12"),
            ("10.1.2.3/8", "10.0.0.0/8"),
            ("2001:db8::/32", "2001:db8::/32"),
            ("2001:db8::1", "2001:db8::1/128"),
            ("::ffff:192.0.2.0/120", "192.0.2.0/24"),
        ] {
            let rules = shown(&[&format!("allow {subnet}")]);
            assert_eq!(rules[2], s(want, true), "{subnet}");
        }
        for bad in [
            "allow 1.2.3.4/33",
            "allow 2001:db8::/129",
            "allow 256",
            "allow 1.2.3.4.5",
            "allow 10/x",
            "allow all 10/8 extra",
            "allow 10/8 10/16",
            "allow ::ffff:192.0.2.0/64",
        ] {
            assert!(table(&[bad]).is_err(), "{bad}");
        }
        let e = table(&["allow ntp.example.org"]).unwrap_err();
        assert!(e.contains("host names are not resolved"), "{e}");
    }

    #[test]
    fn later_same_subnet_wins_and_all_clears_inside() {
        // chrony's own example: the order does not matter without `all`.
        let plain = ["allow 1.2.3.4", "deny 1.2.3.0/24", "allow 1.2.0.0/16"];
        let want = [
            s("-4 default", false),
            s("-6 default", false),
            s("1.2.0.0/16", true),
            s("1.2.3.0/24", false),
            s("1.2.3.4/32", true),
        ];
        assert_eq!(shown(&plain), want);
        let reversed = [plain[2], plain[1], plain[0]];
        assert_eq!(shown(&reversed), want);
        // `allow all` removes the earlier, more specific rules inside it.
        assert_eq!(
            shown(&["allow 1.2.3.4", "deny 1.2.3.0/24", "allow all 1.2.0.0/16"]),
            [
                s("-4 default", false),
                s("-6 default", false),
                s("1.2.0.0/16", true)
            ]
        );
        // ... but not later ones, nor those outside it.
        assert_eq!(
            shown(&["deny 10.9/16", "allow all 1.2/16", "deny 1.2.3"]),
            [
                s("-4 default", false),
                s("-6 default", false),
                s("1.2.0.0/16", true),
                s("1.2.3.0/24", false),
                s("10.9.0.0/16", false),
            ]
        );
        // The same subnet again: the later line decides.
        assert_eq!(
            shown(&["allow 10/8", "deny 10/8"]),
            [
                s("-4 default", false),
                s("-6 default", false),
                s("10.0.0.0/8", false)
            ]
        );
        // deny all with no subnet resets everything.
        assert_eq!(
            shown(&["allow 10/8", "allow 2001:db8::/32", "deny all"]),
            [s("-4 default", false), s("-6 default", false)]
        );
        let lines: Vec<usize> = table(&["allow", "deny 10/8"])
            .unwrap()
            .rules(RestrictFlags::empty())
            .iter()
            .map(|r| r.line)
            .collect();
        assert_eq!(lines, [1, 2, 1]);
    }
}
