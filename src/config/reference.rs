//! The directive reference: what each ntp.conf directive tachyon acts on
//! does, in one place next to the parser, from which the tachyon.conf(5)
//! manual page is generated. A test checks that it names exactly the
//! directives the parser knows, so the two never drift apart.

/// One directive as the manual describes it.
pub struct DirectiveDoc {
    pub name: &'static str,
    /// The line's form.
    pub synopsis: &'static str,
    pub description: &'static str,
}

/// Every ntp.conf directive tachyon acts on, in the order the manual
/// shows them.
pub const DIRECTIVES: &[DirectiveDoc] = &[
    DirectiveDoc {
        name: "server",
        synopsis: "server HOST [iburst] [burst] [prefer] [noselect] [minpoll N] [maxpoll N]",
        description: "An upstream server, by name or address, polled on port 123. iburst sends a burst of requests at start and while unreachable; burst at every poll; prefer favours it in the combination; noselect polls it without ever selecting it. minpoll and maxpoll bound the poll interval (log2 seconds, 3 to 17; defaults 6 and 10). Names are looked up off the sync thread.",
    },
    DirectiveDoc {
        name: "pool",
        synopsis: "pool HOST [options as for server]",
        description: "Several upstreams from one name: up to 4 of its addresses are polled, and a member that stops answering or refuses service is replaced by a fresh look-up.",
    },
    DirectiveDoc {
        name: "driftfile",
        synopsis: "driftfile PATH",
        description: "Where the clock's frequency correction (ppm, one number, as ntpd writes it) is kept across restarts; written at most hourly and on a clean stop, atomically. Its directory must be writable by the user tachyond runs as.",
    },
    DirectiveDoc {
        name: "leapfile",
        synopsis: "leapfile PATH",
        description: "An IETF/NIST leap-seconds.list: announces leap seconds to clients and the kernel, and with clock system gives the kernel TAI - UTC (CLOCK_TAI). Used until the expiry date on its #@ line (logged at start); past it the leap indicator comes from the upstreams.",
    },
    DirectiveDoc {
        name: "restrict",
        synopsis: "restrict [-4|-6] default|ADDRESS [mask MASK]|ADDRESS/LENGTH [FLAG...]",
        description: "Access control, most specific rule first. Flags: ignore (drop everything), noserve (no time service), noquery (no mode 6 queries), limited (rate limited, see ratelimit), kod (a RATE Kiss-o'-Death instead of silence when limited); nomodify, nopeer, notrap hold by design. Mode 6 (ntpq) queries are read-only and answered only where the matching rule lacks noquery, or from loopback when no rule matches.",
    },
    DirectiveDoc {
        name: "ratelimit",
        synopsis: "ratelimit [interval I] [burst B] [leak L] [table N] [ipv6prefix P]",
        description: "Limits for clients under a limited rule: one request per 2^I seconds sustained (default 1), B back to back (16), and 1 in 2^L of the requests over the limit answered anyway (2; at least 1), so a spoofed flood cannot silence its victim; a table of N clients (1048576); IPv6 clients limited per /P (64).",
    },
    DirectiveDoc {
        name: "listen",
        synopsis: "listen ADDRESS[:PORT]",
        description: "An address to serve, repeatable. Default: 0.0.0.0:123 and [::]:123.",
    },
    DirectiveDoc {
        name: "workers",
        synopsis: "workers N|auto",
        description: "Worker threads, each pinned to a core with a socket of its own per address. Default: one per core.",
    },
    DirectiveDoc {
        name: "io",
        synopsis: "io uring|mmsg|auto",
        description: "The workers' I/O: io_uring, recvmmsg/sendmmsg, or io_uring when a probe at start shows it works (the default).",
    },
    DirectiveDoc {
        name: "rcvbuf",
        synopsis: "rcvbuf SIZE",
        description: "The receive buffer asked for each socket (16K to 256M; default 1M): deeper queues only add delay in overload.",
    },
    DirectiveDoc {
        name: "metrics",
        synopsis: "metrics ADDRESS:PORT",
        description: "Where the Prometheus endpoint listens (default 127.0.0.1:9123).",
    },
    DirectiveDoc {
        name: "clock",
        synopsis: "clock system|software|auto",
        description: "Discipline the kernel clock (system), or serve the host clock plus a correction and never touch it (software). auto, the default, chooses system when tachyond may set the time and no other time daemon runs.",
    },
    DirectiveDoc {
        name: "xleave",
        synopsis: "xleave on|off [table PAIRS] | xleave table PAIRS",
        description: "The interleaved mode (RFC 9769), on by default: a client that asks gets, in its next reply, the kernel's exact transmit timestamp of the previous one. The (receive, transmit) pairs live in a table shared by the workers (16M pairs, 128 MiB, by default); off answers every request in the basic mode.",
    },
    DirectiveDoc {
        name: "txtimestamp",
        synopsis: "txtimestamp on|off",
        description: "Kernel transmit timestamps on the listening sockets (on by default): they measure how accurate each reply's transmit timestamp was, calibrate the estimate, and feed the interleaved mode.",
    },
    DirectiveDoc {
        name: "holdover",
        synopsis: "holdover SECONDS",
        description: "How long the clock is still served as synchronized when no upstream is selectable (1 to 86400; default 3600); after it, LI 3 and stratum 0 until an upstream is back.",
    },
    DirectiveDoc {
        name: "local",
        synopsis: "local stratum N",
        description: "Serve the host clock at stratum N and poll no upstream (tests and standalone use).",
    },
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reference_names_exactly_the_directives_the_parser_acts_on() {
        let documented: Vec<&str> = DIRECTIVES.iter().map(|d| d.name).collect();
        let parsed: Vec<&str> = super::super::ntp::directive_names().collect();
        let mut a = documented.clone();
        let mut b = parsed.clone();
        a.sort();
        b.sort();
        assert_eq!(a, b, "docs {documented:?}, parser {parsed:?}");
        for d in DIRECTIVES {
            assert!(d.synopsis.starts_with(d.name), "{}", d.name);
            assert!(d.description.ends_with('.'), "{}", d.name);
        }
    }
}
