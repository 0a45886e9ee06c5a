//! The server's connections, shared fairly between client addresses. A cap per address
//! alone does not protect anyone: 17 addresses holding 250 idle kept-alive connections
//! each (every one within its own cap) took all 4,096, and from then on a new client
//! waited in the listen queue until it gave up (found by a red-team run). So when the
//! server is full, a client that holds fewer connections than the heaviest address still
//! gets one: that address's longest-idle connection (or, when none is idle, its newest) is
//! closed to make room. A client that holds as many as the heaviest is refused at once, so
//! nobody waits in the queue. In the end every address holds at most what the others
//! could not use (max-min fairness), and a newcomer is always served.
//!
//! Not a semaphore: the decision needs to know who holds what, and whether a connection
//! is between requests, which only this table does.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::Notify;

use crate::client_addr::ClientAddr;

/// Every open connection, by client (an address, or an IPv6 /64: see client_addr.rs).
#[derive(Debug)]
pub struct OpenConnections {
    max_connections: usize,
    max_per_client: usize,
    table: Mutex<Table>,
    /// When the table was made: connections' idle times are kept as milliseconds since.
    started: Instant,
}

#[derive(Debug, Default)]
struct Table {
    next_id: u64,
    /// Connections not yet asked to leave, by address then id.
    by_client: HashMap<ClientAddr, HashMap<u64, Arc<ConnectionState>>>,
    /// How many connections `by_client` holds.
    open: usize,
}

/// What the table knows of one connection while it is open.
#[derive(Debug)]
pub struct ConnectionState {
    /// When the table was made (its idle time's origin).
    table_started: Instant,
    /// Requests whose answer is still being sent.
    busy: AtomicUsize,
    /// Requests whose answer is still being sent on any of its client's connections:
    /// shared by them all (HTTP/2 carries many requests on one connection).
    client_busy: Arc<AtomicUsize>,
    /// When its last answer ended (or it opened), in ms since the table was made.
    idle_since_ms: AtomicU64,
    /// Told when the connection must close to make room for another client.
    evicted: Notify,
}

/// Why a connection was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Its address already holds `clients.max_connections_per_client`.
    OverClientCap,
    /// The server is full and its address holds as many as any other.
    Full,
}

/// A connection's place in the table; leaving drops it.
#[derive(Debug)]
pub struct Admitted {
    table: Arc<OpenConnections>,
    client: ClientAddr,
    id: u64,
    pub state: Arc<ConnectionState>,
    /// Whether another connection was asked to leave for this one.
    pub evicted_another: bool,
}

impl OpenConnections {
    pub fn new(max_connections: usize, max_per_client: usize) -> Arc<Self> {
        Arc::new(Self {
            max_connections: max_connections.max(1),
            max_per_client: max_per_client.max(1),
            table: Mutex::new(Table::default()),
            started: Instant::now(),
        })
    }

    /// Admits a connection from `client` (`capped`: whether the per-client cap applies,
    /// not for trusted proxies), asking another client's connection to leave if the server
    /// is full and `client` holds fewer than that one.
    pub fn admit(self: &Arc<Self>, client: ClientAddr, capped: bool) -> Result<Admitted, Refusal> {
        let mut table = self.table.lock().unwrap_or_else(|p| p.into_inner());
        let held = table.by_client.get(&client).map_or(0, HashMap::len);
        if capped && held >= self.max_per_client {
            return Err(Refusal::OverClientCap);
        }
        let mut evicted_another = false;
        if table.open >= self.max_connections {
            let (victim, id, state) = table.victim_for(held).ok_or(Refusal::Full)?;
            table.remove(victim, id);
            state.evicted.notify_one();
            evicted_another = true;
        }
        let id = table.next_id;
        table.next_id += 1;
        let client_busy = table
            .by_client
            .get(&client)
            .and_then(|connections| connections.values().next())
            .map_or_else(Arc::default, |other| other.client_busy.clone());
        let state = Arc::new(ConnectionState {
            table_started: self.started,
            busy: AtomicUsize::new(0),
            client_busy,
            idle_since_ms: AtomicU64::new(ms_since(self.started)),
            evicted: Notify::new(),
        });
        table
            .by_client
            .entry(client)
            .or_default()
            .insert(id, state.clone());
        table.open += 1;
        Ok(Admitted {
            table: self.clone(),
            client,
            id,
            state,
            evicted_another,
        })
    }
}

fn ms_since(start: Instant) -> u64 {
    u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX)
}

impl Table {
    /// The connection to close for a newcomer whose address holds `held`: one of the
    /// heaviest address's, if it holds at least two more (so that the swap leaves it
    /// holding no fewer than the newcomer). Its longest-idle connection, or else its newest.
    fn victim_for(&self, held: usize) -> Option<(ClientAddr, u64, Arc<ConnectionState>)> {
        let (client, connections) = self
            .by_client
            .iter()
            .max_by_key(|(_, connections)| connections.len())?;
        if connections.len() < held + 2 {
            return None;
        }
        let idle = connections
            .iter()
            .filter(|(_, state)| state.busy.load(Ordering::Relaxed) == 0)
            .min_by_key(|(id, state)| (state.idle_since_ms.load(Ordering::Relaxed), **id));
        let (id, state) = idle.or_else(|| connections.iter().max_by_key(|(id, _)| **id))?;
        Some((*client, *id, state.clone()))
    }

    fn remove(&mut self, client: ClientAddr, id: u64) {
        let Some(connections) = self.by_client.get_mut(&client) else {
            return;
        };
        if connections.remove(&id).is_some() {
            self.open -= 1;
        }
        if connections.is_empty() {
            self.by_client.remove(&client);
        }
    }
}

impl Admitted {
    /// Resolves when the connection must close to make room for another client.
    pub async fn evicted(&self) {
        self.state.evicted.notified().await;
    }
}

impl ConnectionState {
    /// How long no request has been open on the connection; `None` while one is.
    pub fn idle_time(&self) -> Option<std::time::Duration> {
        if self.busy.load(Ordering::Relaxed) > 0 {
            return None;
        }
        let since = self.idle_since_ms.load(Ordering::Relaxed);
        let now = ms_since(self.table_started);
        Some(std::time::Duration::from_millis(now.saturating_sub(since)))
    }

    /// Requests open on every connection of this connection's client.
    pub fn client_open_requests(&self) -> usize {
        self.client_busy.load(Ordering::Relaxed)
    }

    /// Marks a request as started; the guard marks its answer as ended when dropped.
    pub fn request_started(self: &Arc<Self>) -> Busy {
        self.busy.fetch_add(1, Ordering::Relaxed);
        self.client_busy.fetch_add(1, Ordering::Relaxed);
        Busy(self.clone())
    }
}

/// A request in flight on a connection: the connection is not idle while it lives.
#[derive(Debug)]
pub struct Busy(Arc<ConnectionState>);

impl Drop for Busy {
    fn drop(&mut self) {
        let state = &self.0;
        state
            .idle_since_ms
            .store(ms_since(state.table_started), Ordering::Relaxed);
        state.busy.fetch_sub(1, Ordering::Relaxed);
        state.client_busy.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let mut table = self.table.table.lock().unwrap_or_else(|p| p.into_inner());
        table.remove(self.client, self.id);
    }
}

#[cfg(test)]
mod tests {
    use futures::FutureExt as _;

    use super::*;

    fn ip(last: u8) -> ClientAddr {
        ClientAddr::of_peer(std::net::IpAddr::from([127, 0, 0, last]))
    }

    #[test]
    fn a_newcomer_to_a_full_server_takes_the_heaviest_address_s_longest_idle_connection() {
        let table = OpenConnections::new(4, 4);
        let first = table.admit(ip(2), true).unwrap();
        let busy = table.admit(ip(2), true).unwrap();
        let _answering = busy.state.request_started();
        let _others = [
            table.admit(ip(2), true).unwrap(),
            table.admit(ip(3), true).unwrap(),
        ];
        let newcomer = table.admit(ip(1), true).unwrap();
        assert!(newcomer.evicted_another);
        assert!(first.state.evicted.notified().now_or_never().is_some());
        assert!(busy.state.evicted.notified().now_or_never().is_none());
    }

    #[test]
    fn a_client_s_open_requests_are_counted_over_all_its_connections() {
        let table = OpenConnections::new(8, 8);
        let one = table.admit(ip(2), true).unwrap();
        let two = table.admit(ip(2), true).unwrap();
        let other = table.admit(ip(3), true).unwrap();
        let answering = [
            one.state.request_started(),
            two.state.request_started(),
            two.state.request_started(),
        ];
        assert_eq!(one.state.client_open_requests(), 3);
        assert_eq!(other.state.client_open_requests(), 0);
        drop(answering);
        assert_eq!(two.state.client_open_requests(), 0);
    }

    #[test]
    fn an_address_holding_as_many_as_the_heaviest_is_refused_when_full() {
        let table = OpenConnections::new(4, 4);
        let _held: Vec<_> = [2, 2, 3, 3]
            .into_iter()
            .map(|last| table.admit(ip(last), true).unwrap())
            .collect();
        assert_eq!(table.admit(ip(2), true).unwrap_err(), Refusal::Full);
        assert_eq!(table.admit(ip(3), false).unwrap_err(), Refusal::Full);
        // One holding fewer gets in, and then holds as many as it may.
        assert!(table.admit(ip(4), true).is_ok());
    }

    #[test]
    fn the_per_client_cap_holds_and_a_closed_connection_gives_its_place_back() {
        let table = OpenConnections::new(8, 2);
        let first = table.admit(ip(2), true).unwrap();
        let _second = table.admit(ip(2), true).unwrap();
        assert_eq!(
            table.admit(ip(2), true).unwrap_err(),
            Refusal::OverClientCap
        );
        assert!(
            table.admit(ip(2), false).is_ok(),
            "a trusted proxy is not capped"
        );
        drop(first);
        assert!(table.admit(ip(2), true).is_ok());
    }

    #[test]
    fn the_addresses_of_one_ipv6_64_are_one_client() {
        let table = OpenConnections::new(8, 2);
        let v6 = |text: &str| ClientAddr::of_peer(text.parse().unwrap());
        let _held = [
            table.admit(v6("2001:db8:0:1::1"), true).unwrap(),
            table.admit(v6("2001:db8:0:1::2"), true).unwrap(),
        ];
        assert_eq!(
            table.admit(v6("2001:db8:0:1:ffff::3"), true).unwrap_err(),
            Refusal::OverClientCap
        );
        assert!(table.admit(v6("2001:db8:0:2::1"), true).is_ok());
    }
}
