//! The per-packet path shared by every I/O backend: access decision, reply rules,
//! timestamps, counters. It knows nothing of sockets, so a kernel-bypass backend
//! can reuse it unchanged.

use std::net::SocketAddr;
use std::sync::Arc;

use crate::clock::system_unix_ns;
use crate::proto::reply::set_transmit;
use crate::proto::{respond, ReplyAction};
use crate::server::restrict::RestrictTable;
use crate::server::stats::WorkerStats;
use crate::state::{ServerState, StateReader};

pub struct Responder {
    state: StateReader,
    restrict: Arc<RestrictTable>,
    stats: Arc<WorkerStats>,
    snapshot: ServerState,
}

impl Responder {
    pub fn new(state: StateReader, restrict: Arc<RestrictTable>, stats: Arc<WorkerStats>) -> Self {
        let snapshot = state.read();
        Responder {
            state,
            restrict,
            stats,
            snapshot,
        }
    }

    pub fn stats(&self) -> &WorkerStats {
        &self.stats
    }

    /// Takes a fresh copy of the server state; called once per batch.
    #[inline]
    pub fn begin_batch(&mut self) {
        self.snapshot = self.state.read();
        self.stats.batches.bump();
    }

    /// Handles one datagram. On `Some(len)`, `out[..len]` is the reply to send to
    /// `peer`, transmit timestamp included.
    #[inline]
    pub fn handle(
        &mut self,
        request: &[u8],
        peer: SocketAddr,
        rx_unix_ns: Option<i64>,
        out: &mut [u8],
    ) -> Option<usize> {
        let stats = &*self.stats;
        stats.received.bump();
        stats.bytes_in.add(request.len() as u64);
        let rx_ns = match rx_unix_ns {
            Some(ns) => ns,
            None => {
                stats.rx_stamp_missing.bump();
                system_unix_ns()
            }
        };
        let correction = &self.snapshot.correction;
        let received = correction.served_timestamp(rx_ns);
        let access = self.restrict.access(peer.ip());
        match respond(request, received, &self.snapshot.system, access, out) {
            ReplyAction::Reply { len } => {
                // The transmit timestamp is read last, just before the reply is queued.
                set_transmit(
                    &mut out[..len],
                    correction.served_timestamp(system_unix_ns()),
                );
                stats.answered.bump();
                stats.answered_by_version[((request[0] >> 3) & 7).min(4) as usize].bump();
                stats.bytes_out.add(len as u64);
                Some(len)
            }
            ReplyAction::Kod { len } => {
                stats.kod_sent.bump();
                stats.bytes_out.add(len as u64);
                Some(len)
            }
            ReplyAction::Drop(reason) => {
                stats.count_drop(reason);
                None
            }
        }
    }
}
