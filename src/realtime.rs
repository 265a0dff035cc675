//! Long-lived streams: Server-Sent Events ([`sse`]) today, the WebSocket bridge next. They
//! ride the ordinary proxy path (routing, auth, endpoint choice, timeouts) and differ only
//! in what happens once the upstream answers: an event stream is passed on as it comes, with
//! headers that keep intermediaries from buffering it and optional heartbeats.

pub mod sse;
pub mod ws;
