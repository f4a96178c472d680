//! NTP control messages (mode 6, RFC 9327): the read-only subset that ntpq
//! (`ntpq -p`, `ntpq -c rv`, `ntpq -c as`) and monitoring tools such as
//! check_ntp_peer use — READSTAT and READVAR. Everything else is answered
//! with an error, never acted on.
//!
//! A request is a 12-byte header and up to 468 bytes of data; a response is
//! cut into fragments of at most 468 bytes of data each, every fragment
//! padded to a multiple of 4 bytes. What the server says (status words,
//! variables) is given to [`respond_control`]; this module only encodes.

use super::packet::LeapIndicator;
use super::request::DropReason;

/// The control message header.
pub const CONTROL_HEADER_LEN: usize = 12;
/// The most data one control message carries.
pub const MAX_FRAGMENT_DATA: usize = 468;
/// The most fragments one response is cut into: a bound on what one request
/// can make the server send.
pub const MAX_FRAGMENTS: usize = 4;

const MODE_CONTROL: u8 = 6;
const RESPONSE: u8 = 0x80;
const ERROR: u8 = 0x40;
const MORE: u8 = 0x20;
const OPCODE_MASK: u8 = 0x1f;

/// Read the association list (assoc 0) or one association's status.
pub const OP_READSTAT: u8 = 1;
/// Read the system variables (assoc 0) or one association's.
pub const OP_READVAR: u8 = 2;

/// Why a control request is refused (the error code of RFC 9327 §3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ControlError {
    Unspecified = 0,
    Permission = 1,
    BadFormat = 2,
    BadOpcode = 3,
    UnknownAssociation = 4,
    UnknownVariable = 5,
    BadValue = 6,
    AdministrativelyProhibited = 7,
}

/// A checked control request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ControlRequest<'a> {
    pub version: u8,
    pub opcode: u8,
    pub sequence: u16,
    pub association: u16,
    /// The request's data: for READVAR, the variable names wanted.
    pub data: &'a [u8],
}

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

/// Whether a datagram is a control message (mode 6), by its first byte.
pub fn is_control(datagram: &[u8]) -> bool {
    datagram.first().is_some_and(|b| b & 7 == MODE_CONTROL)
}

/// Checks a mode 6 datagram: a request (not a response), versions 2 to 4,
/// a data count within the datagram, and no offset (requests come whole).
pub fn parse_control_request(datagram: &[u8]) -> Result<ControlRequest<'_>, DropReason> {
    if datagram.len() < CONTROL_HEADER_LEN {
        return Err(DropReason::TooShort);
    }
    let version = (datagram[0] >> 3) & 7;
    if !(2..=4).contains(&version) {
        return Err(DropReason::BadVersion);
    }
    if datagram[0] & 7 != MODE_CONTROL {
        return Err(DropReason::UnsupportedMode(datagram[0] & 7));
    }
    let flags = datagram[1];
    let count = be16(datagram, 10) as usize;
    let offset = be16(datagram, 8);
    if flags & (RESPONSE | ERROR | MORE) != 0
        || offset != 0
        || count > MAX_FRAGMENT_DATA
        || CONTROL_HEADER_LEN + count > datagram.len()
    {
        return Err(DropReason::BadTrailer);
    }
    Ok(ControlRequest {
        version,
        opcode: flags & OPCODE_MASK,
        sequence: be16(datagram, 2),
        association: be16(datagram, 6),
        data: &datagram[CONTROL_HEADER_LEN..CONTROL_HEADER_LEN + count],
    })
}

fn header(
    req: &ControlRequest<'_>,
    flags: u8,
    status: u16,
    offset: usize,
    count: usize,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(CONTROL_HEADER_LEN + count + 3);
    out.push((req.version << 3) | MODE_CONTROL);
    out.push(RESPONSE | flags | req.opcode);
    out.extend(req.sequence.to_be_bytes());
    out.extend(status.to_be_bytes());
    out.extend(req.association.to_be_bytes());
    out.extend((offset as u16).to_be_bytes());
    out.extend((count as u16).to_be_bytes());
    out
}

/// The response to `req`: `status` and `data` cut into fragments of at most
/// [`MAX_FRAGMENT_DATA`] bytes, each padded to a multiple of 4. Data beyond
/// [`MAX_FRAGMENTS`] fragments is left out.
pub fn respond_control(req: &ControlRequest<'_>, status: u16, data: &[u8]) -> Vec<Vec<u8>> {
    let data = &data[..data.len().min(MAX_FRAGMENTS * MAX_FRAGMENT_DATA)];
    let mut fragments = Vec::new();
    let mut offset = 0;
    loop {
        let end = (offset + MAX_FRAGMENT_DATA).min(data.len());
        let more = end < data.len();
        let mut fragment = header(
            req,
            if more { MORE } else { 0 },
            status,
            offset,
            end - offset,
        );
        fragment.extend_from_slice(&data[offset..end]);
        while fragment.len() % 4 != 0 {
            fragment.push(0);
        }
        fragments.push(fragment);
        if !more {
            return fragments;
        }
        offset = end;
    }
}

/// An error response to `req`.
pub fn refuse_control(req: &ControlRequest<'_>, error: ControlError) -> Vec<u8> {
    header(req, ERROR, (error as u16) << 8, 0, 0)
}

/// The variable names a READVAR request asks for (empty: all of them).
pub fn wanted_names(data: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(data)
        .split(',')
        .map(|item| item.split('=').next().unwrap_or("").trim())
        .filter(|name| !name.is_empty())
        .map(str::to_string)
        .collect()
}

/// `name=value` pairs as a READVAR response carries them: comma separated,
/// a line break before a line grows past 72 characters (as ntpd writes
/// them, so ntpq's raw display stays readable). Only the `wanted` names
/// when any are given.
pub fn format_variables(variables: &[(&str, String)], wanted: &[String]) -> String {
    let mut out = String::new();
    let mut line = 0;
    for (name, value) in variables {
        if !wanted.is_empty() && !wanted.iter().any(|w| w == name) {
            continue;
        }
        let item = format!("{name}={value}");
        if !out.is_empty() {
            out.push(',');
            line += 1;
            if line + item.len() > 72 {
                out.push_str("\r\n");
                line = 0;
            } else {
                out.push(' ');
                line += 1;
            }
        }
        line += item.len();
        out.push_str(&item);
    }
    if !out.is_empty() {
        out.push_str("\r\n");
    }
    out
}

/// The source of synchronization in the system status word.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyncSource {
    Unspecified = 0,
    /// The host clock served as is (`local stratum`).
    Local = 5,
    /// Upstream NTP servers.
    Ntp = 6,
}

/// The system status word: leap indicator, synchronization source, and an
/// (unused) event count and code.
pub fn system_status(leap: LeapIndicator, source: SyncSource) -> u16 {
    ((leap as u16) << 14) | ((source as u16) << 8)
}

/// An association's place in selection, as ntpq shows it (the tally code).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Selection {
    /// ' ': not usable.
    Reject = 0,
    /// 'x': a falseticker.
    Falseticker = 1,
    /// '-': a candidate the clustering left out.
    Outlier = 3,
    /// '+': combined with the system peer.
    Candidate = 4,
    /// '*': the system peer.
    SystemPeer = 6,
}

/// An association's status word: configured, reachable, selection.
pub fn peer_status(configured: bool, reachable: bool, selection: Selection) -> u16 {
    let mut flags = selection as u16;
    if configured {
        flags |= 0x80;
    }
    if reachable {
        flags |= 0x10;
    }
    flags << 8
}

/// The data of a READSTAT response for association 0: each association's
/// identifier and status word.
pub fn association_list(associations: &[(u16, u16)]) -> Vec<u8> {
    associations
        .iter()
        .flat_map(|(id, status)| {
            let mut pair = id.to_be_bytes().to_vec();
            pair.extend(status.to_be_bytes());
            pair
        })
        .collect()
}

/// An NTP timestamp as ntpd writes it in a variable: `0x` and the two
/// 32-bit halves in hexadecimal.
pub fn timestamp_text(ts: super::NtpTimestamp) -> String {
    let bits = ts.to_bits();
    format!("0x{:08x}.{:08x}", bits >> 32, bits & 0xffff_ffff)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(opcode: u8, association: u16, data: &[u8]) -> Vec<u8> {
        let mut r = vec![(2 << 3) | 6, opcode, 0, 7, 0, 0];
        r.extend(association.to_be_bytes());
        r.extend([0, 0]);
        r.extend((data.len() as u16).to_be_bytes());
        r.extend(data);
        while r.len() % 4 != 0 {
            r.push(0);
        }
        r
    }

    #[test]
    fn requests_are_checked() {
        let r = request(OP_READVAR, 3, b"offset,jitter");
        let req = parse_control_request(&r).unwrap();
        assert_eq!(
            (req.version, req.opcode, req.sequence, req.association),
            (2, 2, 7, 3)
        );
        assert_eq!(req.data, b"offset,jitter");
        assert_eq!(parse_control_request(&r[..11]), Err(DropReason::TooShort));
        let mut response = r.clone();
        response[1] |= RESPONSE;
        assert_eq!(
            parse_control_request(&response),
            Err(DropReason::BadTrailer)
        );
        let mut long = r.clone();
        long[11] = 200; // more data than the datagram has
        assert_eq!(parse_control_request(&long), Err(DropReason::BadTrailer));
        let mut v1 = r.clone();
        v1[0] = (1 << 3) | 6;
        assert_eq!(parse_control_request(&v1), Err(DropReason::BadVersion));
        assert!(is_control(&r) && !is_control(&[0x23]));
    }

    #[test]
    fn responses_are_fragmented_and_padded() {
        let r = request(OP_READVAR, 0, b"");
        let req = parse_control_request(&r).unwrap();
        let data = vec![b'a'; 1000];
        let fragments = respond_control(&req, 0x0615, &data);
        assert_eq!(fragments.len(), 3);
        let mut joined = Vec::new();
        for (i, f) in fragments.iter().enumerate() {
            assert_eq!(f.len() % 4, 0);
            assert_eq!(f[0], (2 << 3) | 6);
            assert_eq!(f[1] & RESPONSE, RESPONSE);
            assert_eq!(f[1] & MORE != 0, i < 2, "fragment {i}");
            assert_eq!(f[1] & OPCODE_MASK, OP_READVAR);
            assert_eq!(be16(f, 2), 7, "sequence echoed");
            assert_eq!(be16(f, 4), 0x0615);
            assert_eq!(be16(f, 8) as usize, joined.len(), "offset");
            let count = be16(f, 10) as usize;
            assert!(count <= MAX_FRAGMENT_DATA);
            joined.extend_from_slice(&f[12..12 + count]);
        }
        assert_eq!(joined, data);
        // Bounded whatever the data.
        let huge = vec![b'b'; 10 * MAX_FRAGMENT_DATA];
        assert_eq!(respond_control(&req, 0, &huge).len(), MAX_FRAGMENTS);
        // An empty answer is one fragment.
        assert_eq!(respond_control(&req, 0, &[]).len(), 1);
    }

    #[test]
    fn errors_carry_their_code() {
        let r = request(9, 0, b"");
        let req = parse_control_request(&r).unwrap();
        let e = refuse_control(&req, ControlError::BadOpcode);
        assert_eq!(e.len(), 12);
        assert_eq!(e[1], RESPONSE | ERROR | 9);
        assert_eq!(be16(&e, 4) >> 8, 3);
    }

    #[test]
    fn variables_as_ntpd_writes_them() {
        let vars = [
            ("stratum", "2".to_string()),
            ("offset", "0.012".to_string()),
            ("refid", "192.0.2.1".to_string()),
        ];
        assert_eq!(
            format_variables(&vars, &[]),
            "stratum=2, offset=0.012, refid=192.0.2.1\r\n"
        );
        let wanted = wanted_names(b" offset , refid=x,");
        assert_eq!(wanted, ["offset", "refid"]);
        assert_eq!(
            format_variables(&vars, &wanted),
            "offset=0.012, refid=192.0.2.1\r\n"
        );
        let many: Vec<(&str, String)> = (0..20)
            .map(|_| ("name", "0x0123456789".to_string()))
            .collect();
        let text = format_variables(&many, &[]);
        assert!(text.lines().all(|l| l.len() <= 74), "{text}");
    }

    #[test]
    fn status_words() {
        assert_eq!(
            system_status(LeapIndicator::NoWarning, SyncSource::Ntp),
            0x0600
        );
        assert_eq!(
            system_status(LeapIndicator::Unknown, SyncSource::Unspecified),
            0xc000
        );
        // ntpq: statval = status >> 8; configured 0x80, reach 0x10, sel & 7.
        assert_eq!(peer_status(true, true, Selection::SystemPeer), 0x9600);
        assert_eq!(peer_status(true, false, Selection::Reject), 0x8000);
        assert_eq!(
            association_list(&[(1, 0x9600), (2, 0x9400)]),
            [0, 1, 0x96, 0, 0, 2, 0x94, 0]
        );
        assert_eq!(
            timestamp_text(super::super::NtpTimestamp::from_bits(0xe1f2_a3b4_0000_0001)),
            "0xe1f2a3b4.00000001"
        );
    }
}
