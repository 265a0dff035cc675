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
//! pass through tungstenite, which does not compress).
//!
//! Once both sides are open, [`run`] moves whole messages: text stays text, binary stays
//! binary, fragmented messages arrive reassembled, and a close frame's code and reason go to
//! the other side. Flow control is per message: while one message waits for a slow peer,
//! nothing more is read from the sender; if the peer refuses it for `stall_timeout`, both
//! sides are closed with 1013. Pings go to both peers every `ping_interval` (tungstenite
//! answers theirs); a peer not heard from for two intervals is dropped. Messages over
//! `max_message_size` are refused with 1009, protocol violations with 1002 or 1007. On
//! shutdown, bridges run until the grace period is over, then both sides get 1001.
//!
//! The opening lives in [`handshake`], the frames in [`bridge`]; this file holds what both
//! share (the limits, and the upstream side handed from one to the other).

use std::time::Duration;

use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::WebSocketStream;

use crate::config;
use crate::upstream::Lease;

mod bridge;
mod handshake;

pub use bridge::run;
pub use handshake::{
    check_client_handshake, connect_upstream, is_upgrade, switching_protocols, target_from_query,
};

type Socket = WebSocketStream<TokioIo<Upgraded>>;

/// The bridge's limits, from `[websocket]`.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    frames: WebSocketConfig,
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
        let max_message = usize::try_from(config.max_message_size).unwrap_or(usize::MAX);
        let max_buffered = usize::try_from(config.max_buffered_bytes).unwrap_or(usize::MAX);
        // Small buffers: an idle bridge should cost little. tungstenite keeps its read buffer
        // for the life of the socket and reads at most that much per call: 1 KiB per side
        // (measured by bench/run's ws phase: 4 KiB cost 6 KiB more per bridge) at the price of more
        // reads for large messages. Writes go out eagerly (nothing is held back to batch), and
        // the write buffer may hold one message beyond the cap.
        let frames = WebSocketConfig::default()
            .read_buffer_size(1024)
            .write_buffer_size(0)
            .max_write_buffer_size(max_buffered.max(max_message).saturating_add(1 << 16))
            .max_message_size(Some(max_message))
            .max_frame_size(Some(max_message));
        Settings {
            frames,
            ping_interval: config.ping_interval,
            stall_timeout: config.stall_timeout,
        }
    }
}
