//! Loading the XDP program (the committed `bpf/ntp_filter.bpf.o`, built by
//! `scripts/build-bpf` from `bpf/ntp_filter.bpf.c`) with aya, telling it
//! what is served, attaching it to the interface, and registering each
//! queue's AF_XDP socket in its socket map.
//!
//! The attachment is a BPF link (`BPF_LINK_CREATE`, Linux 5.9+) owned by
//! this process and never pinned: when tachyond exits, however it exits
//! (SIGKILL included), the kernel closes the link's descriptor and detaches
//! the program.

use std::fmt;
use std::net::{IpAddr, SocketAddr};

use aya::maps::{Array, HashMap, XskMap};
use aya::programs::{Xdp, XdpFlags};
use aya::Ebpf;

use super::xsk::XskSocket;

/// The program object, as built by `scripts/build-bpf`.
static OBJECT: &[u8] = aya::include_bytes_aligned!("bpf/ntp_filter.bpf.o");

/// The program's name in the object: with receive stamps in the frames'
/// metadata, and the same filter without them, for kernels that refuse
/// `bpf_xdp_adjust_meta` to XDP programs.
const PROGRAM: &str = "tachyon_ntp";
const PROGRAM_PLAIN: &str = "tachyon_ntp_plain";

/// `struct config` of the program.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
struct FilterConfig {
    port_be: u16,
    any_ipv4: u8,
    any_ipv6: u8,
    reserved: u32,
}

// SAFETY: FilterConfig is repr(C) of integers with no padding (2+1+1+4
// bytes), matching the program's `struct config`; any bytes are valid.
unsafe impl aya::Pod for FilterConfig {}

/// How the program is attached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttachMode {
    /// In the driver (XDP_FLAGS_DRV_MODE).
    Native,
    /// In the kernel's generic receive path (XDP_FLAGS_SKB_MODE): any
    /// driver, slower, copy mode only.
    Generic,
}

impl fmt::Display for AttachMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AttachMode::Native => "native",
            AttachMode::Generic => "generic",
        })
    }
}

/// What the program redirects: the destination port, and the destination
/// addresses (an unspecified address serves its whole family).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Served {
    pub port: u16,
    pub addresses: Vec<IpAddr>,
}

impl Served {
    /// From the listen addresses; they must share one port.
    pub fn from_listen(listen: &[SocketAddr]) -> Result<Served, String> {
        let Some(first) = listen.first() else {
            return Err("no listen address".into());
        };
        if let Some(other) = listen.iter().find(|a| a.port() != first.port()) {
            return Err(format!(
                "io xdp serves one port: listen addresses {first} and {other} differ"
            ));
        }
        Ok(Served {
            port: first.port(),
            addresses: listen.iter().map(|a| a.ip()).collect(),
        })
    }

    /// Whether a datagram to `destination`:`port` is served.
    pub fn matches(&self, destination: IpAddr, port: u16) -> bool {
        port == self.port
            && self.addresses.iter().any(|a| {
                *a == destination || (a.is_unspecified() && a.is_ipv4() == destination.is_ipv4())
            })
    }
}

/// The loaded program, attached to an interface; detached when dropped.
pub struct Attached {
    ebpf: Ebpf,
    pub mode: AttachMode,
    /// The program stamps each frame's arrival in its metadata; without,
    /// the workers read the clock as they take frames from the ring.
    pub stamps: bool,
}

/// Why loading or attaching failed, in words an operator can act on.
fn explain(what: &str, e: impl std::error::Error) -> String {
    let mut text = format!("{what}: {e}");
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(&format!(": {s}"));
        source = s.source();
    }
    if text.contains("Operation not permitted") || text.contains("EPERM") {
        text.push_str(
            " (loading an XDP program needs CAP_BPF and CAP_NET_ADMIN, or CAP_SYS_ADMIN: \
             start tachyond as root or give it those capabilities)",
        );
    } else if text.contains("Device or resource busy") || text.contains("EBUSY") {
        text.push_str(
            " (another XDP program is attached to the interface: `ip link set dev IFACE xdp off` \
             if it is a stale one)",
        );
    }
    text
}

impl Attached {
    /// Loads the program, configures it for `served`, and attaches it to
    /// `interface` in `mode` (`None`: native where the driver supports it,
    /// else generic).
    pub fn attach(
        interface: &str,
        served: &Served,
        mode: Option<AttachMode>,
    ) -> Result<Attached, String> {
        let mut ebpf = Ebpf::load(OBJECT).map_err(|e| explain("loading the XDP program", e))?;
        configure(&mut ebpf, served)?;
        let stamps = match load(&mut ebpf, PROGRAM) {
            Ok(()) => true,
            Err(stamped) => {
                load(&mut ebpf, PROGRAM_PLAIN).map_err(|plain| {
                    format!(
                        "the kernel refused the XDP program, with receive stamps (Linux 6.1 \
                         or later): {stamped}; and without: {plain}"
                    )
                })?;
                log::warn!(
                    "io xdp: the kernel refused the XDP program that stamps receive times \
                     ({}); loaded the one without: receive timestamps are read by the \
                     workers as they take frames from the ring, microseconds later",
                    last_line(&stamped)
                );
                false
            }
        };
        let program = xdp_program(&mut ebpf, if stamps { PROGRAM } else { PROGRAM_PLAIN })?;
        let attach = |program: &mut Xdp, mode: AttachMode| {
            let flags = match mode {
                AttachMode::Native => XdpFlags::DRV_MODE,
                AttachMode::Generic => XdpFlags::SKB_MODE,
            };
            program
                .attach(interface, flags)
                .map(|_| mode)
                .map_err(|e| explain(&format!("attaching XDP ({mode}) to {interface}"), e))
        };
        let mode = match mode {
            Some(mode) => attach(program, mode)?,
            None => match attach(program, AttachMode::Native) {
                Ok(mode) => mode,
                Err(native) => {
                    log::warn!("{native}; trying generic XDP");
                    attach(program, AttachMode::Generic)?
                }
            },
        };
        Ok(Attached { ebpf, mode, stamps })
    }

    /// Sends the frames for `queue` to `socket` from now on.
    pub fn register(&mut self, queue: u32, socket: &XskSocket) -> Result<(), String> {
        let map = self
            .ebpf
            .map_mut("xsks")
            .ok_or("the XDP object has no map xsks")?;
        let mut sockets = XskMap::try_from(map).map_err(|e| explain("map xsks", e))?;
        sockets
            .set(queue, socket.fd(), 0)
            .map_err(|e| explain(&format!("registering the socket of queue {queue}"), e))
    }
}

/// The XDP program `name` of the object.
fn xdp_program<'a>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut Xdp, String> {
    ebpf.program_mut(name)
        .ok_or_else(|| format!("the XDP object has no program {name}"))?
        .try_into()
        .map_err(|e| explain("the XDP object", e))
}

/// Loads the program `name` into the kernel (the verifier runs here).
fn load(ebpf: &mut Ebpf, name: &str) -> Result<(), String> {
    xdp_program(ebpf, name)?
        .load()
        .map_err(|e| explain(name, e))
}

/// The verifier's verdict: the last line of its log before its statistics.
fn last_line(text: &str) -> &str {
    const STATISTICS: [&str; 4] = ["verification time", "stack depth", "processed", ":"];
    text.lines()
        .rev()
        .map(str::trim)
        .find(|l| !l.is_empty() && !STATISTICS.iter().any(|s| l.starts_with(s)))
        .unwrap_or(text)
}

/// Writes the served port and addresses into the program's maps.
fn configure(ebpf: &mut Ebpf, served: &Served) -> Result<(), String> {
    let config = FilterConfig {
        port_be: served.port.to_be(),
        any_ipv4: served
            .addresses
            .iter()
            .any(|a| a.is_ipv4() && a.is_unspecified()) as u8,
        any_ipv6: served
            .addresses
            .iter()
            .any(|a| a.is_ipv6() && a.is_unspecified()) as u8,
        reserved: 0,
    };
    let map = ebpf.map_mut("ntp_config").ok_or("no map ntp_config")?;
    let mut array: Array<_, FilterConfig> =
        Array::try_from(map).map_err(|e| explain("map ntp_config", e))?;
    array
        .set(0, config, 0)
        .map_err(|e| explain("map ntp_config", e))?;
    let map = ebpf.map_mut("served_ipv4").ok_or("no map served_ipv4")?;
    let mut v4: HashMap<_, u32, u8> =
        HashMap::try_from(map).map_err(|e| explain("map served_ipv4", e))?;
    for a in &served.addresses {
        if let IpAddr::V4(a) = a {
            v4.insert(u32::from_ne_bytes(a.octets()), 1, 0)
                .map_err(|e| explain("map served_ipv4", e))?;
        }
    }
    let map = ebpf.map_mut("served_ipv6").ok_or("no map served_ipv6")?;
    let mut v6: HashMap<_, [u8; 16], u8> =
        HashMap::try_from(map).map_err(|e| explain("map served_ipv6", e))?;
    for a in &served.addresses {
        if let IpAddr::V6(a) = a {
            v6.insert(a.octets(), 1, 0)
                .map_err(|e| explain("map served_ipv6", e))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn served_addresses_and_wildcards() {
        let served =
            Served::from_listen(&["10.0.0.1:123".parse().unwrap(), "[::]:123".parse().unwrap()])
                .unwrap();
        assert!(served.matches("10.0.0.1".parse().unwrap(), 123));
        assert!(!served.matches("10.0.0.2".parse().unwrap(), 123));
        assert!(!served.matches("10.0.0.1".parse().unwrap(), 124));
        assert!(served.matches("2001:db8::9".parse().unwrap(), 123));
        assert!(Served::from_listen(&[
            "10.0.0.1:123".parse().unwrap(),
            "10.0.0.2:124".parse().unwrap()
        ])
        .unwrap_err()
        .contains("one port"));
    }

    #[test]
    fn the_verifiers_verdict_is_quoted_without_its_statistics() {
        let log = "BPF_PROG_LOAD syscall failed. Verifier output: 0: R1=ctx() R10=fp0\n    \
                   129: (85) call bpf_xdp_adjust_meta#54\n    \
                   program of this type cannot use helper bpf_xdp_adjust_meta#54\n    \
                   verification time 160 usec\n    stack depth 24\n    \
                   processed 68 insns (limit 1000000)\n    : Invalid argument (os error 22)";
        assert_eq!(
            last_line(log),
            "program of this type cannot use helper bpf_xdp_adjust_meta#54"
        );
    }

    #[test]
    fn the_object_is_the_program_the_loader_expects() {
        let object = aya_obj_names(OBJECT);
        for name in [
            PROGRAM,
            PROGRAM_PLAIN,
            "xsks",
            "ntp_config",
            "served_ipv4",
            "served_ipv6",
        ] {
            assert!(
                object.iter().any(|n| n == name),
                "{name} missing: {object:?}"
            );
        }
    }

    /// Names of the object's symbols, read without loading anything.
    fn aya_obj_names(object: &[u8]) -> Vec<String> {
        let parsed = aya_obj::Object::parse(object).expect("a BPF object");
        let mut names: Vec<String> = parsed.maps.keys().cloned().collect();
        names.extend(parsed.programs.keys().cloned());
        names
    }
}
