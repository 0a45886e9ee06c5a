//! Connections: accepting them with the limits a server facing hostile clients needs
//! ([`listener`]), sharing the connections it allows fairly between client addresses when
//! it is full ([`fair_share`]), and serving each one over TLS or not, as HTTP/1.1 or
//! HTTP/2 ([`connection`], [`sniff`], [`tls`]).

mod connection;
mod fair_share;
pub mod listener;
mod sniff;
pub mod tls;
