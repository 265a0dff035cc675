//! The WebSocket bridge: a client's WebSocket joined to one on the chosen upstream endpoint.
//!
//! Order matters, and it is the point of this module: the request has already been routed,
//! authenticated (a token may come from `access_token` or a cookie, since browsers cannot set
//! `Authorization` on a WebSocket) and checked by the proxy; here an endpoint is picked, the
//! upstream handshake is done (within the route's response timeout), and only when the
//! upstream has said `101` does the client get its `101`, carrying the subprotocol and the
//! headers the upstream chose. Everything that fails before that is a plain HTTP answer with
//! the JSON error: `502` refused or rejected, `504` handshake timeout, `503` no endpoint.
//!
//! The upstream handshake reuses the client's `Sec-WebSocket-Key`, so the upstream's
//! `Sec-WebSocket-Accept` is right for the client too; extensions are not offered (frames
//! pass through unchanged but for masking, so nothing may be compressed).
//!
//! Once both sides are open, [`start`] relays frame by frame: text stays text, binary stays
//! binary, fragments stay fragments, and a close frame's code and reason go to the other side.
//! Text is checked to be UTF-8 on its way (1007 if not), the frames to be well-formed (1002),
//! messages to be within `max_message_size` (1009). Flow control: nothing more is read from a
//! side while `max_buffered_bytes` wait for the other; if that one then takes nothing for
//! `stall_timeout`, both sides are closed with 1013. Pings go to both peers every
//! `ping_interval` (theirs are answered here); a peer not heard from for two intervals is
//! dropped and the other told 1001. On shutdown, bridges run until the grace period is over,
//! then both sides get 1001.
//!
//! The opening lives in [`handshake`]; the relay in [`bridge`], which reads and writes frames
//! with [`frame`] and queues bytes for each peer in an [`outbox`]. This file holds what the
//! opening and the relay share (the limits, and the upstream side handed from one to the
//! other).

use std::time::Duration;

use hyper::upgrade::Upgraded;

use crate::config;
use crate::upstream::Lease;

mod bridge;
mod frame;
mod handshake;
mod outbox;

pub use bridge::start;
pub use handshake::{
    check_client_handshake, connect_upstream, is_upgrade, switching_protocols, target_from_query,
};

/// The bridge's limits, from `[websocket]`.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    max_message: u64,
    /// Bytes waiting for a peer beyond which nothing more is read from the other.
    max_buffered: usize,
    ping_interval: Duration,
    stall_timeout: Duration,
}

/// An upstream that has accepted the upgrade: its socket-to-be and the lease on its endpoint.
pub struct Accepted {
    upstream: Upgraded,
    lease: Lease,
}

impl Settings {
    pub fn new(config: &config::WebSocketConfig) -> Self {
        Settings {
            max_message: config.max_message_size,
            // At least 1: with 0, nothing would ever be read.
            max_buffered: usize::try_from(config.max_buffered_bytes)
                .unwrap_or(usize::MAX)
                .max(1),
            ping_interval: config.ping_interval,
            stall_timeout: config.stall_timeout,
        }
    }
}
