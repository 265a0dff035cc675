//! sluice's integration tests: one binary (it links once), real loopback sockets, fake
//! upstreams that record what reached them. Each module covers one area of the contract.

// Test support fails loudly on purpose: a broken fixture must stop the test, not hide.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

mod access;
mod admin;
mod auth;
mod cache;
mod cli;
mod exchange;
mod forwarding;
mod framing;
mod jwt;
mod limits;
mod observe;
mod pools;
mod ratelimit;
mod routing;
mod server;
mod streams;
mod timeouts;
mod websocket;
