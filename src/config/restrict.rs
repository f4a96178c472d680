//! `restrict` lines: access rules by address and prefix.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::ops::{BitOr, BitOrAssign};

use super::words::{clip, number_in, quoted, suggestion};

/// Which address family a `default` rule covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Family {
    /// `restrict default`: both families.
    Any,
    /// `restrict -4 default`.
    V4,
    /// `restrict -6 default`.
    V6,
}

impl Family {
    /// Whether `addr` belongs to this family.
    pub fn matches(self, addr: IpAddr) -> bool {
        matches!(
            (self, addr),
            (Family::Any, _) | (Family::V4, IpAddr::V4(_)) | (Family::V6, IpAddr::V6(_))
        )
    }
}

/// What a rule applies to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RestrictTarget {
    /// Every address of the family not covered by a more specific rule.
    /// `restrict 0.0.0.0 mask 0.0.0.0` and `restrict ::/0` also yield this.
    Default { family: Family },
    /// A network: `addr` has every bit past `prefix_len` cleared;
    /// `prefix_len` is 1..=32 for IPv4 and 1..=128 for IPv6.
    Net { addr: IpAddr, prefix_len: u8 },
}

impl RestrictTarget {
    /// Whether the rule covers `addr`. IPv4-mapped IPv6 addresses
    /// (`::ffff:a.b.c.d`) are treated as the IPv4 address they carry.
    pub fn matches(&self, addr: IpAddr) -> bool {
        let addr = addr.to_canonical();
        match *self {
            RestrictTarget::Default { family } => family.matches(addr),
            RestrictTarget::Net {
                addr: net,
                prefix_len,
            } => match (net, addr) {
                (IpAddr::V4(net), IpAddr::V4(a)) => {
                    u32::from(a) & v4_mask(prefix_len) == u32::from(net)
                }
                (IpAddr::V6(net), IpAddr::V6(a)) => {
                    u128::from(a) & v6_mask(prefix_len) == u128::from(net)
                }
                _ => false,
            },
        }
    }

    /// The prefix length, 0 for a default rule: the longest match wins.
    pub fn prefix_len(&self) -> u8 {
        match *self {
            RestrictTarget::Default { .. } => 0,
            RestrictTarget::Net { prefix_len, .. } => prefix_len,
        }
    }
}

impl fmt::Display for RestrictTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            RestrictTarget::Default {
                family: Family::Any,
            } => f.write_str("default"),
            RestrictTarget::Default { family: Family::V4 } => f.write_str("-4 default"),
            RestrictTarget::Default { family: Family::V6 } => f.write_str("-6 default"),
            RestrictTarget::Net { addr, prefix_len } => write!(f, "{addr}/{prefix_len}"),
        }
    }
}

/// The restrictions of a rule, as bits.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct RestrictFlags(pub u32);

impl RestrictFlags {
    /// Drop every packet.
    pub const IGNORE: Self = Self(1 << 0);
    /// Send a Kiss-o'-Death instead of silently dropping (with `limited`).
    pub const KOD: Self = Self(1 << 1);
    /// Rate limit clients.
    pub const LIMITED: Self = Self(1 << 2);
    /// Refuse requests that would change the configuration.
    pub const NOMODIFY: Self = Self(1 << 3);
    /// Refuse mode 6 and 7 queries.
    pub const NOQUERY: Self = Self(1 << 4);
    /// Refuse to create peer associations.
    pub const NOPEER: Self = Self(1 << 5);
    /// Refuse time service (mode 3), but not queries.
    pub const NOSERVE: Self = Self(1 << 6);
    /// Refuse mode 6 trap registrations.
    pub const NOTRAP: Self = Self(1 << 7);

    const NAMES: [(Self, &'static str); 8] = [
        (Self::IGNORE, "ignore"),
        (Self::KOD, "kod"),
        (Self::LIMITED, "limited"),
        (Self::NOMODIFY, "nomodify"),
        (Self::NOQUERY, "noquery"),
        (Self::NOPEER, "nopeer"),
        (Self::NOSERVE, "noserve"),
        (Self::NOTRAP, "notrap"),
    ];

    /// No restriction.
    pub const fn empty() -> Self {
        Self(0)
    }

    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// Whether every flag of `other` is set.
    pub const fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }

    pub fn insert(&mut self, other: Self) {
        self.0 |= other.0;
    }

    pub fn remove(&mut self, other: Self) {
        self.0 &= !other.0;
    }

    pub const fn union(self, other: Self) -> Self {
        Self(self.0 | other.0)
    }

    /// The flag with this configuration-file name.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::NAMES
            .iter()
            .find(|(_, n)| *n == name)
            .map(|(flag, _)| *flag)
    }

    /// The names of the flags set, in a fixed order.
    pub fn names(self) -> impl Iterator<Item = &'static str> {
        Self::NAMES
            .into_iter()
            .filter(move |(flag, _)| self.contains(*flag))
            .map(|(_, name)| name)
    }
}

impl BitOr for RestrictFlags {
    type Output = Self;

    fn bitor(self, rhs: Self) -> Self {
        self.union(rhs)
    }
}

impl BitOrAssign for RestrictFlags {
    fn bitor_assign(&mut self, rhs: Self) {
        self.insert(rhs);
    }
}

/// The flag names separated by spaces, or `none`.
impl fmt::Display for RestrictFlags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return f.write_str("none");
        }
        for (i, name) in self.names().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            f.write_str(name)?;
        }
        Ok(())
    }
}

/// One `restrict` line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RestrictRule {
    pub target: RestrictTarget,
    pub flags: RestrictFlags,
    /// The line of the configuration file.
    pub line: usize,
}

const VALID_FLAGS: &str = "ignore, kod, limited, nomodify, noquery, nopeer, noserve, notrap \
    (accepted and ignored: lowpriotrap, noepeer, nomrulist, notrust, ntpport, version, \
    serverresponse [fuzz], ippeerlimit N)";

/// Flags ntpd knows that mean nothing to tachyon, and why.
const IGNORED_FLAGS: &[(&str, &str)] = &[
    ("lowpriotrap", "there are no mode 6 traps"),
    ("nomrulist", "there is no mode 6 MRU list"),
    ("notrust", "there is no authentication"),
    ("ntpport", "source ports are not matched"),
    (
        "version",
        "requests of NTP versions 1 to 4 are all answered",
    ),
    ("noepeer", "there are no peer associations"),
    ("serverresponse", "replies are never fuzzed"),
    ("ippeerlimit", "there are no peer associations"),
];

/// Parses the arguments of a `restrict` line. Returns `None` for
/// `restrict source`, which is accepted with a warning and ignored.
pub(super) fn parse(
    line: usize,
    args: &[&str],
    warnings: &mut Vec<String>,
) -> Result<Option<RestrictRule>, String> {
    let mut args = args.iter().copied().peekable();
    let family = match args.peek() {
        Some(&"-4") => Some(Family::V4),
        Some(&"-6") => Some(Family::V6),
        _ => None,
    };
    if family.is_some() {
        args.next();
    }
    let target_token = args.next().ok_or_else(|| {
        "restrict: expected \"default\", \"source\" or an address, got nothing".to_string()
    })?;

    let target = match target_token {
        "default" => Some(RestrictTarget::Default {
            family: family.unwrap_or(Family::Any),
        }),
        "source" => None,
        _ => {
            let mask = if args.peek() == Some(&"mask") {
                args.next();
                Some(args.next().ok_or_else(|| {
                    "restrict: mask: expected a mask such as 255.255.255.0, got nothing".to_string()
                })?)
            } else {
                None
            };
            Some(parse_net(target_token, mask, family)?)
        }
    };

    let mut flags = RestrictFlags::empty();
    while let Some(token) = args.next() {
        if let Some(flag) = RestrictFlags::from_name(token) {
            flags.insert(flag);
            continue;
        }
        let Some((name, why)) = IGNORED_FLAGS.iter().find(|(n, _)| *n == token) else {
            if token == "mask" {
                return Err(match target {
                    Some(RestrictTarget::Net { .. }) => {
                        "restrict: \"mask\" must come right after the address".to_string()
                    }
                    _ => format!("restrict: \"mask\" cannot be used with \"{target_token}\""),
                });
            }
            let names: Vec<&str> = RestrictFlags::NAMES
                .iter()
                .map(|(_, n)| *n)
                .chain(IGNORED_FLAGS.iter().map(|(n, _)| *n))
                .collect();
            return Err(format!(
                "restrict: unknown flag {}{}; valid flags: {VALID_FLAGS}",
                quoted(token),
                suggestion(token, &names)
            ));
        };
        let mut shown = name.to_string();
        if *name == "ippeerlimit" {
            let n = number_in("restrict: ippeerlimit", args.next(), (-1, 65535))?;
            shown = format!("ippeerlimit {n}");
        } else if *name == "serverresponse" && args.peek() == Some(&"fuzz") {
            args.next();
            shown = "serverresponse fuzz".to_string();
        }
        warnings.push(format!(
            "restrict: flag \"{shown}\" is ignored by tachyon ({why})"
        ));
    }

    match target {
        Some(target) => Ok(Some(RestrictRule {
            target,
            flags,
            line,
        })),
        None => {
            warnings.push(
                "restrict source: ignored by tachyon (ntpd applies it to the addresses of \
                 upstream servers; tachyon's own upstream traffic is not subject to restrict)"
                    .to_string(),
            );
            Ok(None)
        }
    }
}

/// `ADDR`, `ADDR/LEN` or `ADDR mask MASK`, checked against `-4`/`-6`.
fn parse_net(
    token: &str,
    mask: Option<&str>,
    family: Option<Family>,
) -> Result<RestrictTarget, String> {
    let (addr_text, len_text) = match token.split_once('/') {
        Some((a, l)) => (a, Some(l)),
        None => (token, None),
    };
    let bare = addr_text
        .strip_prefix('[')
        .and_then(|a| a.strip_suffix(']'))
        .filter(|a| a.contains(':'))
        .unwrap_or(addr_text);
    let addr: IpAddr = bare.parse().map_err(|_| {
        format!(
            "restrict: expected \"default\", \"source\" or an IP address, got {} \
             (host names are not resolved in restrict lines)",
            quoted(token)
        )
    })?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    let prefix_len = match (len_text, mask) {
        (Some(_), Some(_)) => {
            return Err(format!(
                "restrict: {}: give either /LEN or mask, not both",
                clip(token)
            ))
        }
        (Some(len), None) => {
            let what = format!("restrict: {}: prefix length", clip(addr_text));
            number_in(&what, Some(len), (0, max))? as u8
        }
        (None, Some(mask)) => mask_prefix(addr, mask)?,
        (None, None) => max as u8,
    };
    let target = network("restrict", token, addr, prefix_len)?;
    let is_v4 = match target {
        RestrictTarget::Net { addr, .. } => addr.is_ipv4(),
        RestrictTarget::Default { family } => family == Family::V4,
    };
    let mapped = if addr.is_ipv6() && is_v4 {
        " (an IPv4-mapped address, matched as the IPv4 address it carries)"
    } else {
        ""
    };
    match (family, is_v4) {
        (Some(Family::V4), false) => {
            Err(format!("restrict: -4 given, but {addr} is an IPv6 address"))
        }
        (Some(Family::V6), true) => Err(format!(
            "restrict: -6 given, but {addr} is an IPv4 address{mapped}"
        )),
        _ => Ok(target),
    }
}

/// The rule for `addr/prefix_len`: host bits cleared, a zero-length prefix
/// the family's default rule, and an IPv4-mapped IPv6 network (`::ffff:a.b.c.d`
/// with a prefix of 96 or more) the IPv4 network it stands for, since clients
/// are matched by the IPv4 address a mapped one carries. `directive` and
/// `token` are for messages.
pub(super) fn network(
    directive: &str,
    token: &str,
    addr: IpAddr,
    prefix_len: u8,
) -> Result<RestrictTarget, String> {
    let mapped = match addr {
        IpAddr::V6(v6) => v6.to_ipv4_mapped(),
        IpAddr::V4(_) => None,
    };
    let (addr, prefix_len) = match mapped {
        Some(v4) => {
            if prefix_len < MAPPED_PREFIX {
                return Err(format!(
                    "{directive}: {} covers more than the IPv4-mapped addresses \
                     ::ffff:0:0/96, and clients are matched by the IPv4 address a mapped \
                     one carries: write an IPv4 rule, or a prefix of 96 or more",
                    clip(token)
                ));
            }
            (IpAddr::V4(v4), prefix_len - MAPPED_PREFIX)
        }
        None => (addr, prefix_len),
    };
    if prefix_len == 0 {
        let family = if addr.is_ipv4() {
            Family::V4
        } else {
            Family::V6
        };
        return Ok(RestrictTarget::Default { family });
    }
    let addr = match addr {
        IpAddr::V4(a) => IpAddr::V4(Ipv4Addr::from(u32::from(a) & v4_mask(prefix_len))),
        IpAddr::V6(a) => IpAddr::V6(Ipv6Addr::from(u128::from(a) & v6_mask(prefix_len))),
    };
    Ok(RestrictTarget::Net { addr, prefix_len })
}

/// The length of `::ffff:0:0/96`, the IPv4-mapped IPv6 addresses.
const MAPPED_PREFIX: u8 = 96;

/// The prefix length of a contiguous mask of the same family as `addr`.
fn mask_prefix(addr: IpAddr, text: &str) -> Result<u8, String> {
    let mask: IpAddr = text.parse().map_err(|_| {
        format!(
            "restrict: mask: expected a mask written as an address, such as 255.255.255.0 \
             or ffff:ffff::, got {}",
            quoted(text)
        )
    })?;
    let (ones, count) = match (addr, mask) {
        (IpAddr::V4(_), IpAddr::V4(m)) => {
            let bits = u32::from(m);
            (bits.leading_ones(), bits.count_ones())
        }
        (IpAddr::V6(_), IpAddr::V6(m)) => {
            let bits = u128::from(m);
            (bits.leading_ones(), bits.count_ones())
        }
        _ => {
            return Err(format!(
                "restrict: mask {mask} is not of the same address family as {addr}"
            ))
        }
    };
    if ones != count {
        return Err(format!(
            "restrict: mask {mask} is not contiguous (its one bits must all lead)"
        ));
    }
    // At most 128.
    Ok(ones as u8)
}

fn v4_mask(prefix_len: u8) -> u32 {
    u32::MAX
        .checked_shl(32 - u32::from(prefix_len.min(32)))
        .unwrap_or(0)
}

fn v6_mask(prefix_len: u8) -> u128 {
    u128::MAX
        .checked_shl(128 - u32::from(prefix_len.min(128)))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(line: &str) -> Result<(Option<RestrictRule>, Vec<String>), String> {
        let tokens: Vec<&str> = line.split_whitespace().collect();
        let mut warnings = Vec::new();
        parse(1, &tokens, &mut warnings).map(|r| (r, warnings))
    }

    fn net(line: &str) -> (String, u8) {
        match rule(line).unwrap().0.unwrap().target {
            RestrictTarget::Net { addr, prefix_len } => (addr.to_string(), prefix_len),
            other => panic!("{line}: {other:?}"),
        }
    }

    #[test]
    fn masks() {
        assert_eq!(v4_mask(0), 0);
        assert_eq!(v4_mask(32), u32::MAX);
        assert_eq!(v4_mask(24), 0xffff_ff00);
        assert_eq!(v6_mask(0), 0);
        assert_eq!(v6_mask(128), u128::MAX);
        assert_eq!(net("10.1.2.3 mask 255.255.0.0"), ("10.1.0.0".into(), 16));
        assert_eq!(
            net("10.1.2.3 mask 255.255.255.255"),
            ("10.1.2.3".into(), 32)
        );
        assert_eq!(net("10.1.2.3/8"), ("10.0.0.0".into(), 8));
        assert_eq!(net("2001:db8:1:2::5/32"), ("2001:db8::".into(), 32));
        assert_eq!(
            net("2001:db8::1 mask ffff:ffff:ffff::"),
            ("2001:db8::".into(), 48)
        );
        assert_eq!(net("[2001:db8::1]/64"), ("2001:db8::".into(), 64));
        assert_eq!(net("::1"), ("::1".into(), 128));
        assert!(rule("10.0.0.0 mask 255.0.255.0").is_err());
        assert!(rule("10.0.0.0 mask ffff::").is_err());
        assert!(rule("10.0.0.0/33").is_err());
        assert!(rule("10.0.0.0/8 mask 255.0.0.0").is_err());
        assert!(rule("2001:db8::/129").is_err());
        assert!(rule("10.0.0.0 mask").is_err());
        assert!(rule("10.0.0.0 kod mask 255.0.0.0").is_err());
        assert!(rule("[10.0.0.1]").is_err());
        let e = rule("default mask 0.0.0.0").unwrap_err();
        assert!(e.contains("cannot be used with \"default\""), "{e}");
    }

    #[test]
    fn zero_prefix_is_default() {
        for (line, family) in [
            ("0.0.0.0 mask 0.0.0.0 kod", Family::V4),
            ("::/0 kod", Family::V6),
            ("-4 default kod", Family::V4),
            ("default kod", Family::Any),
        ] {
            let r = rule(line).unwrap().0.unwrap();
            assert_eq!(r.target, RestrictTarget::Default { family }, "{line}");
            assert_eq!(r.flags, RestrictFlags::KOD);
        }
    }

    #[test]
    fn matching() {
        let t = net_target("192.0.2.0/24");
        assert!(t.matches("192.0.2.77".parse().unwrap()));
        assert!(t.matches("::ffff:192.0.2.77".parse().unwrap()));
        assert!(!t.matches("192.0.3.1".parse().unwrap()));
        assert!(!t.matches("2001:db8::1".parse().unwrap()));
        let t = net_target("2001:db8::/32");
        assert!(t.matches("2001:db8:ffff::1".parse().unwrap()));
        assert!(!t.matches("2001:db9::1".parse().unwrap()));
        let d = RestrictTarget::Default { family: Family::V6 };
        assert!(d.matches("::1".parse().unwrap()));
        assert!(!d.matches("::ffff:127.0.0.1".parse().unwrap()));
        assert_eq!(d.prefix_len(), 0);
        assert_eq!(t.prefix_len(), 32);
        assert_eq!(t.to_string(), "2001:db8::/32");
    }

    fn net_target(text: &str) -> RestrictTarget {
        rule(text).unwrap().0.unwrap().target
    }

    #[test]
    fn flags() {
        let mut f = RestrictFlags::empty();
        assert!(f.is_empty());
        assert_eq!(f.to_string(), "none");
        f.insert(RestrictFlags::NOTRAP);
        f |= RestrictFlags::KOD;
        assert_eq!(f.to_string(), "kod notrap");
        assert!(f.contains(RestrictFlags::KOD | RestrictFlags::NOTRAP));
        assert!(!f.contains(RestrictFlags::LIMITED));
        f.remove(RestrictFlags::KOD);
        assert_eq!(f, RestrictFlags::NOTRAP);
        assert_eq!(
            RestrictFlags::from_name("noserve"),
            Some(RestrictFlags::NOSERVE)
        );
        assert_eq!(RestrictFlags::from_name("nope"), None);
        let all = RestrictFlags::NAMES
            .iter()
            .fold(RestrictFlags::empty(), |a, (f, _)| a.union(*f));
        assert_eq!(all.names().count(), 8);
        assert_eq!(all.0.count_ones(), 8);
    }

    #[test]
    fn ignored_flags_warn() {
        let (r, w) = rule("default notrust serverresponse fuzz ippeerlimit 4 version kod").unwrap();
        assert_eq!(r.unwrap().flags, RestrictFlags::KOD);
        assert_eq!(w.len(), 4, "{w:?}");
        assert!(w[1].contains("serverresponse fuzz"));
        assert!(rule("default ippeerlimit").is_err());
        let e = rule("default nomodfy").unwrap_err();
        assert!(e.contains("did you mean \"nomodify\""), "{e}");
    }
}
