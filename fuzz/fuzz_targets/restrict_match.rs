//! restrict tables built from arbitrary rules, looked up with arbitrary
//! addresses: the most specific matching rule always wins.
#![no_main]

use std::net::IpAddr;

use libfuzzer_sys::fuzz_target;
use tachyon::config::{Family, RestrictFlags, RestrictRule, RestrictTarget};
use tachyon::server::access::restrict::RestrictTable;

fn prefix_matches(rule: u128, len: u8, addr: u128, bits: u8) -> bool {
    if len == 0 {
        return true;
    }
    let shift = bits - len.min(bits);
    (rule >> shift) == (addr >> shift)
}

fuzz_target!(|input: (Vec<(bool, u128, u8, u32)>, bool, u128)| {
    let (raw_rules, v6, raw_addr) = input;
    let mut rules = Vec::new();
    for (i, (rv6, bits, len, flags)) in raw_rules.iter().take(64).enumerate() {
        let (addr, max) = if *rv6 {
            (IpAddr::V6((*bits).into()), 128u8)
        } else {
            (IpAddr::V4((*bits as u32).into()), 32u8)
        };
        if addr.to_canonical().is_ipv4() != !*rv6 {
            continue; // IPv4-mapped IPv6 rules: covered by unit tests
        }
        let prefix_len = len % (max + 1);
        let target = if prefix_len == 0 {
            RestrictTarget::Default {
                family: if *rv6 { Family::V6 } else { Family::V4 },
            }
        } else {
            RestrictTarget::Net { addr, prefix_len }
        };
        rules.push(RestrictRule {
            target,
            flags: RestrictFlags(*flags & 0xff),
            line: i + 1,
        });
    }
    let table = RestrictTable::new(&rules);
    let (addr, key, bits) = if v6 {
        (IpAddr::V6(raw_addr.into()), raw_addr, 128u8)
    } else {
        (IpAddr::V4((raw_addr as u32).into()), raw_addr as u32 as u128, 32u8)
    };
    if v6 && IpAddr::V6(raw_addr.into()).to_canonical().is_ipv4() {
        return; // mapped addresses are matched as IPv4; covered by unit tests
    }
    // Reference answer: the longest matching prefix of this family, last rule
    // winning among equal prefixes, else the family's default, else no flags.
    let mut best: Option<(u8, RestrictFlags)> = None;
    for r in &rules {
        if let RestrictTarget::Net { addr: ra, prefix_len } = r.target {
            let (rk, rbits) = match ra {
                IpAddr::V4(a) => (u32::from(a) as u128, 32u8),
                IpAddr::V6(a) => (u128::from(a), 128u8),
            };
            if rbits != bits || ra.to_canonical().is_ipv4() != !v6 {
                continue;
            }
            if prefix_matches(rk, prefix_len, key, bits)
                && best.is_none_or(|(l, _)| prefix_len >= l)
            {
                best = Some((prefix_len, r.flags));
            }
        }
    }
    let default = rules
        .iter()
        .rev()
        .find_map(|r| match r.target {
            RestrictTarget::Default { family } if family == if v6 { Family::V6 } else { Family::V4 } => {
                Some(r.flags)
            }
            _ => None,
        })
        .unwrap_or_default();
    let expected = best.map(|(_, f)| f).unwrap_or(default);
    assert_eq!(table.flags(addr), expected, "{addr}");
});
