//! The bridge proper: two WebSockets joined until one side ends, with pings, the stall
//! timeout, the message-size limit and the close codes each ending gets (see [`super`]).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use http::HeaderValue;
use hyper_util::rt::TokioIo;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role};
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_util::sync::CancellationToken;

use crate::upstream::StreamCounters;

use super::{Accepted, Settings, Socket};

/// How a bridge ended.
#[derive(Debug)]
enum End {
    /// The sender sent a close frame; it went to the other side.
    Closed,
    /// The sender's connection ended without a close frame.
    SenderGone,
    /// Writing to the receiver failed.
    ReceiverGone,
    /// The sender sent a message over the size limit (close code 1009 for it).
    TooBig,
    /// The sender broke the protocol: 1002, or 1007 for text that is not UTF-8.
    Violation(CloseCode),
    /// The receiver refused data for `stall_timeout`.
    Stalled,
    /// The receiver was not heard from for two ping intervals.
    Silent,
    /// The shutdown grace period is over.
    Shutdown,
}

/// Which way a pump moves messages: `Up` from the client to the upstream.
#[derive(Debug, Clone, Copy)]
enum Way {
    Up,
    Down,
}

/// Waits for the client's side of the upgrade, then runs the bridge until either side ends
/// or `stop` (the shutdown grace period is over) fires. Holds the endpoint's lease throughout.
pub async fn run(
    client: hyper::upgrade::OnUpgrade,
    accepted: Accepted,
    settings: Settings,
    stop: CancellationToken,
    request_id: HeaderValue,
) {
    let Accepted { upstream, lease } = accepted;
    let client = match client.await {
        Ok(upgraded) => upgraded,
        Err(e) => {
            tracing::debug!(error = %e, "the client's upgrade did not complete");
            // The upstream has its WebSocket open: close it properly, not by a dropped socket.
            let mut upstream = Socket::from_raw_socket(
                TokioIo::new(upstream),
                Role::Client,
                Some(settings.frames),
            )
            .await;
            let frame = CloseFrame {
                code: CloseCode::Away,
                reason: "client went away".into(),
            };
            let _ = tokio::time::timeout(Duration::from_secs(1), upstream.close(Some(frame))).await;
            return;
        }
    };
    let client =
        Socket::from_raw_socket(TokioIo::new(client), Role::Server, Some(settings.frames)).await;
    let upstream =
        Socket::from_raw_socket(TokioIo::new(upstream), Role::Client, Some(settings.frames)).await;
    let end = bridge(client, upstream, settings, stop, &lease.endpoint().stats.ws).await;
    tracing::debug!(
        request_id = request_id.to_str().unwrap_or_default(),
        upstream = &*lease.endpoint().label,
        ?end,
        "WebSocket bridge ended"
    );
    drop(lease);
}

async fn bridge(
    client: Socket,
    upstream: Socket,
    settings: Settings,
    stop: CancellationToken,
    counters: &StreamCounters,
) -> End {
    let started = Instant::now();
    let heard_client = AtomicU64::new(0);
    let heard_upstream = AtomicU64::new(0);
    let (mut client_tx, mut client_rx) = client.split();
    let (mut upstream_tx, mut upstream_rx) = upstream.split();
    let (count_up, count_down) = (
        |bytes| counters.up(1, bytes),
        |bytes| counters.down(1, bytes),
    );
    let outcome = {
        let up = pump(
            &mut client_rx,
            &mut upstream_tx,
            Heard {
                from: &heard_client,
                to: &heard_upstream,
                since: started,
            },
            settings,
            &count_up,
        );
        let down = pump(
            &mut upstream_rx,
            &mut client_tx,
            Heard {
                from: &heard_upstream,
                to: &heard_client,
                since: started,
            },
            settings,
            &count_down,
        );
        tokio::select! {
            end = up => (end, Way::Up),
            end = down => (end, Way::Down),
            () = stop.cancelled() => (End::Shutdown, Way::Up),
        }
    };
    // What each side is told: (to the sender of that way, to its receiver).
    let away = (CloseCode::Away, "peer went away");
    let (to_sender, to_receiver) = match &outcome.0 {
        End::Closed => {
            // The close went across; give both sides a moment to finish the handshake.
            let _ = tokio::join!(
                tokio::time::timeout(Duration::from_secs(1), client_tx.flush()),
                tokio::time::timeout(Duration::from_secs(1), upstream_tx.flush()),
            );
            return outcome.0;
        }
        End::SenderGone => (None, Some(away)),
        End::ReceiverGone => (Some(away), None),
        End::TooBig => (Some((CloseCode::Size, "message too big")), Some(away)),
        End::Violation(code) => (Some((*code, "protocol violation")), Some(away)),
        End::Stalled => {
            let too_slow = (CloseCode::Again, "peer too slow");
            (Some(too_slow), Some(too_slow))
        }
        End::Silent => (Some((CloseCode::Away, "peer not responding")), None),
        End::Shutdown => {
            let going = (CloseCode::Away, "gateway shutting down");
            (Some(going), Some(going))
        }
    };
    let (to_client, to_upstream) = match outcome.1 {
        Way::Up => (to_sender, to_receiver),
        Way::Down => (to_receiver, to_sender),
    };
    // Each side on its own clock: one that cannot take its close (its buffers are full)
    // must not keep the other from getting its own.
    let _ = tokio::join!(
        close(&mut client_tx, to_client),
        close(&mut upstream_tx, to_upstream),
    );
    outcome.0
}

async fn close(tx: &mut SplitSink<Socket, Message>, frame: Option<(CloseCode, &'static str)>) {
    let Some((code, reason)) = frame else {
        return;
    };
    let message = Message::Close(Some(CloseFrame {
        code,
        reason: reason.into(),
    }));
    let _ = tokio::time::timeout(Duration::from_secs(1), tx.send(message)).await;
}

/// Milliseconds since the bridge started at which each side was last heard from.
struct Heard<'a> {
    from: &'a AtomicU64,
    to: &'a AtomicU64,
    since: Instant,
}

impl Heard<'_> {
    fn now(&self) -> u64 {
        self.since.elapsed().as_millis() as u64
    }
}

/// Moves messages from `rx` to `tx`, and keeps `tx`'s peer pinged.
async fn pump(
    rx: &mut SplitStream<Socket>,
    tx: &mut SplitSink<Socket, Message>,
    heard: Heard<'_>,
    settings: Settings,
    count: &(dyn Fn(u64) + Sync),
) -> End {
    let mut ping = tokio::time::interval_at(
        Instant::now() + settings.ping_interval,
        settings.ping_interval,
    );
    let silent_after = 2 * settings.ping_interval.as_millis() as u64;
    loop {
        let message = tokio::select! {
            message = rx.next() => message,
            _ = ping.tick() => {
                if heard.now().saturating_sub(heard.to.load(Ordering::Relaxed)) > silent_after {
                    return End::Silent;
                }
                match tokio::time::timeout(settings.stall_timeout, tx.send(Message::Ping(Bytes::new()))).await {
                    Ok(Ok(())) => continue,
                    Ok(Err(_)) => return End::ReceiverGone,
                    Err(_) => return End::Stalled,
                }
            }
        };
        let message = match message {
            Some(Ok(message)) => message,
            Some(Err(tungstenite::Error::Capacity(_))) => return End::TooBig,
            Some(Err(tungstenite::Error::Utf8(_))) => return End::Violation(CloseCode::Invalid),
            Some(Err(tungstenite::Error::Protocol(_))) => {
                return End::Violation(CloseCode::Protocol)
            }
            Some(Err(_)) | None => return End::SenderGone,
        };
        heard.from.store(heard.now(), Ordering::Relaxed);
        let closing = matches!(message, Message::Close(_));
        match message {
            // Answered (pings) or noted (pongs) on this hop; each hop keeps its own alive.
            Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => continue,
            message => {
                let bytes = message.len() as u64;
                match tokio::time::timeout(settings.stall_timeout, tx.send(message)).await {
                    Ok(Ok(())) if closing => return End::Closed,
                    Ok(Ok(())) => count(bytes),
                    Ok(Err(_)) => return End::ReceiverGone,
                    Err(_) => return End::Stalled,
                }
            }
        }
    }
}
