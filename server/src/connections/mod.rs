//! Connections: accepting them with the limits a server facing hostile clients needs
//! ([`listener`]), and sharing the connections it allows fairly between client addresses
//! when it is full ([`fair_share`]).

mod fair_share;
pub mod listener;
