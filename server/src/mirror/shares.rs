//! A mirror's bounded work (NAR copies, NARs streamed to a client alone) shared between
//! client addresses: one address may hold only its share of each pool at once. Found in
//! review: one address that opened 80 connections, asked for cold NARs and read nothing
//! took all 16 copy places and the streams past them, and a legitimate client elsewhere got
//! 503 for its cold NAR.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::client_addr::ClientAddr;

/// Places of one kind of work, with a per-address share.
#[derive(Debug)]
pub(super) struct Pool {
    places: Arc<Semaphore>,
    per_address: usize,
    held: Arc<Mutex<HashMap<ClientAddr, usize>>>,
}

/// One place taken; given back (and counted off its address's share) when dropped.
#[derive(Debug)]
pub(super) struct Place {
    _permit: OwnedSemaphorePermit,
    _share: Option<Share>,
}

#[derive(Debug)]
struct Share {
    held: Arc<Mutex<HashMap<ClientAddr, usize>>>,
    address: ClientAddr,
}

impl Drop for Share {
    fn drop(&mut self) {
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = held.get_mut(&self.address) {
            *count -= 1;
            if *count == 0 {
                held.remove(&self.address);
            }
        }
    }
}

/// Why no place was taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Refused {
    /// Every place is taken.
    Full,
    /// This address holds its share already.
    AddressShare,
}

impl Pool {
    pub(super) fn new(places: usize, per_address: usize) -> Self {
        Self {
            places: Arc::new(Semaphore::new(places)),
            per_address,
            held: Arc::default(),
        }
    }

    /// A place for a request from `address`, when one is free and the address holds fewer
    /// than its share (a request without an address, from the server itself, takes only
    /// from the pool).
    pub(super) fn try_take(&self, address: Option<ClientAddr>) -> Result<Place, Refused> {
        let share = match address {
            Some(address) => {
                let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
                let count = held.entry(address).or_insert(0);
                if *count >= self.per_address {
                    return Err(Refused::AddressShare);
                }
                *count += 1;
                Some(Share {
                    held: self.held.clone(),
                    address,
                })
            }
            None => None,
        };
        // Taken after the share: a refusal here drops the share again.
        let permit = self
            .places
            .clone()
            .try_acquire_owned()
            .map_err(|_| Refused::Full)?;
        Ok(Place {
            _permit: permit,
            _share: share,
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn address(last: u8) -> Option<ClientAddr> {
        Some(ClientAddr::of_peer(std::net::IpAddr::from([
            192, 0, 2, last,
        ])))
    }

    #[test]
    fn one_address_takes_its_share_and_leaves_the_rest_to_others() {
        let pool = Pool::new(4, 2);
        let mine: Vec<_> = (0..2).map(|_| pool.try_take(address(1)).unwrap()).collect();
        assert_eq!(
            pool.try_take(address(1)).unwrap_err(),
            Refused::AddressShare
        );
        let theirs = pool.try_take(address(2)).unwrap();
        let server = pool.try_take(None).unwrap();
        assert_eq!(pool.try_take(address(3)).unwrap_err(), Refused::Full);
        drop(mine);
        assert!(pool.try_take(address(1)).is_ok());
        drop((theirs, server));
        assert!(
            pool.held.lock().unwrap().len() <= 1,
            "emptied shares are forgotten"
        );
    }
}
