//! `restrict` rules: most specific match first, per address family.
//!
//! Rules are grouped by prefix length; a lookup masks the address once per
//! distinct length, longest first, and probes a hash map. That stays fast with
//! thousands of rules (there are at most 33 or 129 distinct lengths).

use std::collections::HashMap;
use std::net::IpAddr;

use crate::config::{Family, RestrictFlags, RestrictRule, RestrictTarget};

#[derive(Default, Debug)]
struct FamilyTable {
    /// (prefix length, masked address -> flags), longest prefix first.
    by_length: Vec<(u8, HashMap<u128, RestrictFlags>)>,
    /// `restrict default` (`None`: no such line).
    default: Option<RestrictFlags>,
}

impl FamilyTable {
    fn insert(&mut self, key: u128, prefix_len: u8, flags: RestrictFlags) {
        let pos = match self.by_length.iter().position(|(l, _)| *l <= prefix_len) {
            Some(p) if self.by_length[p].0 == prefix_len => p,
            Some(p) => {
                self.by_length.insert(p, (prefix_len, HashMap::new()));
                p
            }
            None => {
                self.by_length.push((prefix_len, HashMap::new()));
                self.by_length.len() - 1
            }
        };
        // As in ntpd, a later line for the same network replaces the earlier one.
        self.by_length[pos].1.insert(key, flags);
    }

    fn lookup(&self, key: u128, bits: u8) -> Option<RestrictFlags> {
        for (len, map) in &self.by_length {
            if let Some(flags) = map.get(&mask(key, *len, bits)) {
                return Some(*flags);
            }
        }
        self.default
    }
}

fn mask(key: u128, prefix_len: u8, bits: u8) -> u128 {
    if prefix_len == 0 {
        return 0;
    }
    let keep = u128::MAX << (bits - prefix_len.min(bits));
    let width_mask = if bits == 128 {
        u128::MAX
    } else {
        (1u128 << bits) - 1
    };
    key & keep & width_mask
}

fn key_of(ip: IpAddr) -> (bool, u128) {
    match ip.to_canonical() {
        IpAddr::V4(v4) => (true, u32::from(v4) as u128),
        IpAddr::V6(v6) => (false, u128::from(v6)),
    }
}

/// The compiled restrict rules.
#[derive(Default, Debug)]
pub struct RestrictTable {
    v4: FamilyTable,
    v6: FamilyTable,
}

impl RestrictTable {
    pub fn new(rules: &[RestrictRule]) -> Self {
        let mut table = RestrictTable::default();
        for rule in rules {
            match rule.target {
                RestrictTarget::Default { family } => {
                    if family != Family::V6 {
                        table.v4.default = Some(rule.flags);
                    }
                    if family != Family::V4 {
                        table.v6.default = Some(rule.flags);
                    }
                }
                RestrictTarget::Net { addr, prefix_len } => {
                    let (is_v4, key) = key_of(addr);
                    if is_v4 {
                        table
                            .v4
                            .insert(mask(key, prefix_len, 32), prefix_len, rule.flags);
                    } else {
                        table
                            .v6
                            .insert(mask(key, prefix_len, 128), prefix_len, rule.flags);
                    }
                }
            }
        }
        table
    }

    /// The flags of the most specific rule matching `ip` (none: no
    /// restriction).
    pub fn flags(&self, ip: IpAddr) -> RestrictFlags {
        self.rule_for(ip).unwrap_or_default()
    }

    /// The flags of the most specific rule matching `ip`; `None` when no
    /// rule, not even `restrict default`, matches.
    pub fn rule_for(&self, ip: IpAddr) -> Option<RestrictFlags> {
        match key_of(ip) {
            (true, key) => self.v4.lookup(key, 32),
            (false, key) => self.v6.lookup(key, 128),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn table(text: &str) -> RestrictTable {
        RestrictTable::new(&Config::parse(text, "test.conf").unwrap().restrict)
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn seed_file_rules() {
        let t = table(
            "restrict -4 default kod notrap nomodify nopeer noquery limited\n\
             restrict -6 default kod notrap nomodify nopeer noquery limited\n\
             restrict 127.0.0.1\nrestrict ::1\n",
        );
        let public = t.flags(ip("192.0.2.7"));
        assert!(public.contains(RestrictFlags::KOD));
        assert!(public.contains(RestrictFlags::LIMITED));
        assert!(public.contains(RestrictFlags::NOQUERY));
        assert!(t.flags(ip("2001:db8::1")).contains(RestrictFlags::LIMITED));
        assert_eq!(t.flags(ip("127.0.0.1")), RestrictFlags::default());
        assert_eq!(t.flags(ip("::1")), RestrictFlags::default());
        // Other loopback addresses fall to the default.
        assert!(t.flags(ip("127.0.0.2")).contains(RestrictFlags::LIMITED));
    }

    #[test]
    fn most_specific_wins_regardless_of_order() {
        let t = table(
            "restrict 10.1.2.3 noquery\n\
             restrict 10.0.0.0 mask 255.0.0.0 ignore\n\
             restrict 10.1.0.0/16 noserve\n\
             restrict default limited\n",
        );
        assert!(t.flags(ip("10.9.9.9")).contains(RestrictFlags::IGNORE));
        assert!(t.flags(ip("10.1.7.7")).contains(RestrictFlags::NOSERVE));
        assert!(t.flags(ip("10.1.2.3")).contains(RestrictFlags::NOQUERY));
        assert!(t.flags(ip("11.0.0.1")).contains(RestrictFlags::LIMITED));
    }

    #[test]
    fn ipv6_prefixes_and_mapped_addresses() {
        let t = table("restrict 2001:db8::/32 ignore\nrestrict 192.0.2.0/24 ignore\n");
        let ignore = RestrictFlags::IGNORE;
        assert!(t.flags(ip("2001:db8:ffff::1")).contains(ignore));
        assert!(!t.flags(ip("2001:db9::1")).contains(ignore));
        assert!(t.flags(ip("::ffff:192.0.2.1")).contains(ignore));
    }

    #[test]
    fn no_rules_means_no_restrictions() {
        let t = RestrictTable::new(&[]);
        assert_eq!(t.flags(ip("203.0.113.1")), RestrictFlags::default());
        assert_eq!(t.flags(ip("::1")), RestrictFlags::default());
    }

    #[test]
    fn thousands_of_rules() {
        let mut text = String::from("restrict default noserve\n");
        for i in 0..4000u32 {
            text.push_str(&format!(
                "restrict 10.{}.{}.0/24 limited\n",
                (i >> 8) & 0xff,
                i & 0xff
            ));
        }
        let t = table(&text);
        assert!(t.flags(ip("10.0.5.9")).contains(RestrictFlags::LIMITED));
        assert!(t.flags(ip("10.200.0.1")).contains(RestrictFlags::NOSERVE));
    }
}
