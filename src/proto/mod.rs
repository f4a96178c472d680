//! The NTP wire format and the server reply rules.
//!
//! Pure code: no I/O and no clock reads. Time is always passed in, so every rule
//! can be tested deterministically.
#![forbid(unsafe_code)]

pub mod control;
pub mod ext;
pub mod interleave;
pub mod packet;
pub mod reply;
pub mod request;
pub mod time;

pub use packet::{Header, LeapIndicator, Mode, HEADER_LEN};
pub use reply::{respond, respond_interleaved, Access, ReplyAction, SystemInfo};
pub use request::{parse_client_request, ClientRequest, DropReason};
pub use time::{NtpShort, NtpTimestamp};
