//! Membership on etcd: the hive's card under a lease, kept alive; the fleet's prefix
//! watched into the view. A lost link is said in the view (and `/health`), and the
//! hive joins again by itself, with backoff. On shutdown the lease is revoked, so
//! peers stop routing here at once rather than at its expiry.
//!
//! - `card.rs`: this hive's card, from its catalog, memory and workers.

pub mod card;

use std::sync::Arc;
use std::time::Duration;

use etcd_client::{Client, EventType, GetOptions, PutOptions, WatchOptions};

use crate::fleet::etcd::EtcdAccess;
use crate::fleet::view::{Card, Fleet, Link};
use crate::gateway::Gateway;
use crate::metrics::PeerLabel;
use card::ModelsPart;

/// How often the card is rebuilt and, when it changed, published: at most this often.
const CARD_EVERY: Duration = Duration::from_secs(1);
/// The first wait before joining again; it doubles up to half the lease's TTL, so
/// that a hive is back in the view within two TTLs of etcd's return.
const FIRST_BACKOFF: Duration = Duration::from_millis(500);

/// Keeps this hive in the fleet until the hive stops.
pub async fn run(gateway: Arc<Gateway>, fleet: Arc<Fleet>, access: EtcdAccess, url: String) {
    let shutdown = gateway.hive.shutdown.clone();
    let ttl = gateway.hive.config.fleet_ttl_secs;
    let max_backoff = Duration::from_millis(ttl.saturating_mul(500)).max(FIRST_BACKOFF);
    let mut backoff = FIRST_BACKOFF;
    loop {
        let joined = tokio::select! {
            r = session(&gateway, &fleet, &access, &url, ttl) => r,
            () = shutdown.stopping() => return,
        };
        let link = match joined {
            Ok(()) => return,
            Err(Lost::Link(reason)) => Link::Unreachable { reason },
            Err(Lost::Refused(reason)) => Link::Refused { reason },
        };
        if fleet.link() != link {
            tracing::warn!(endpoints = ?access.endpoints, "fleet: not joined, serving this hive's own models: {link:?}");
        }
        fleet.set_link(link);
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            () = shutdown.stopping() => return,
        }
        backoff = (backoff * 2).min(max_backoff);
    }
}

/// Why a session ended.
enum Lost {
    /// etcd could not be reached, or the link broke.
    Link(String),
    /// The fleet has another hive under this hive's id.
    Refused(String),
}

impl From<String> for Lost {
    fn from(reason: String) -> Self {
        Self::Link(reason)
    }
}

/// One joined session: returns `Ok` when the hive stops (its lease revoked), an
/// error when the link is lost or joining is refused.
async fn session(
    gateway: &Gateway,
    fleet: &Fleet,
    access: &EtcdAccess,
    url: &str,
    ttl: u64,
) -> Result<(), Lost> {
    let shutdown = gateway.hive.shutdown.clone();
    let mut client = Client::connect(&access.endpoints, Some(access.options.clone()))
        .await
        .map_err(|e| format!("cannot connect: {e}"))?;
    let ttl_i = i64::try_from(ttl).unwrap_or(10);
    let lease = client
        .lease_grant(ttl_i, None)
        .await
        .map_err(|e| format!("lease: {e}"))?
        .id();
    // a hive whose home was copied claims another's id: it does not join over it
    let key = fleet.key();
    let mine = client
        .get(key.as_str(), None)
        .await
        .map_err(|e| format!("reading {key}: {e}"))?;
    if let Some(kv) = mine.kvs().first()
        && let Ok(other) = serde_json::from_slice::<Card>(kv.value())
        && other.url != url
    {
        return Err(Lost::Refused(format!(
            "another hive, at {}, holds this hive's id {} (a copied home?): not joining while it does; delete {} to take a new id",
            other.url,
            fleet.hive_id,
            gateway.hive.home.join("hive-id").display()
        )));
    }
    let mut part = ModelsPart::default();
    let mut card = card::build(gateway, &fleet.hive_id, url, &mut part).await;
    put(&mut client, fleet, &card, lease).await?;
    let (mut keeper, mut kept) = client
        .lease_keep_alive(lease)
        .await
        .map_err(|e| format!("lease keep-alive: {e}"))?;
    let prefix = fleet.prefix();
    let now = client
        .get(prefix.as_str(), Some(GetOptions::new().with_prefix()))
        .await
        .map_err(|e| format!("reading {prefix}: {e}"))?;
    fleet.reset();
    for kv in now.kvs() {
        take(fleet, kv.key(), kv.value());
    }
    let mut gauged = Vec::new();
    gauge_peers(gateway, fleet, &mut gauged);
    let revision = now.header().map_or(0, |h| h.revision());
    let mut watch = client
        .watch(
            prefix.as_str(),
            Some(
                WatchOptions::new()
                    .with_prefix()
                    .with_start_revision(revision.saturating_add(1)),
            ),
        )
        .await
        .map_err(|e| format!("watching {prefix}: {e}"))?;
    fleet.set_link(Link::Joined);
    tracing::info!(fleet = %fleet.name, hive = %fleet.hive_id, %url, peers = fleet.peers().len(), "joined the fleet");
    let mut keep_every = tokio::time::interval(Duration::from_secs((ttl / 3).max(1)));
    let mut card_every = tokio::time::interval(CARD_EVERY);
    card_every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.stopping() => {
                // peers stop routing here now, not at the lease's expiry
                let _ = tokio::time::timeout(Duration::from_secs(2), client.lease_revoke(lease)).await;
                return Ok(());
            }
            _ = keep_every.tick() => {
                keeper.keep_alive().await.map_err(|e| format!("lease keep-alive: {e}"))?;
            }
            answer = kept.message() => match answer {
                Ok(Some(r)) if r.ttl() > 0 => {}
                Ok(_) => return Err(Lost::Link("the lease expired".to_owned())),
                Err(e) => return Err(Lost::Link(format!("lease keep-alive: {e}"))),
            },
            _ = card_every.tick() => {
                let now = card::build(gateway, &fleet.hive_id, url, &mut part).await;
                if now != card {
                    put(&mut client, fleet, &now, lease).await?;
                    card = now;
                }
            }
            event = watch.message() => {
                let response = event
                    .map_err(|e| format!("watch: {e}"))?
                    .ok_or_else(|| "the watch ended".to_owned())?;
                if response.canceled() {
                    return Err(Lost::Link(format!("the watch was cancelled: {}", response.cancel_reason())));
                }
                for e in response.events() {
                    let Some(kv) = e.kv() else { continue };
                    match e.event_type() {
                        EventType::Put => take(fleet, kv.key(), kv.value()),
                        EventType::Delete => {
                            if let Ok(key) = std::str::from_utf8(kv.key()) {
                                fleet.delete(key);
                            }
                        }
                    }
                }
                gauge_peers(gateway, fleet, &mut gauged);
            }
        }
    }
}

/// Publishes `card` under the lease.
async fn put(client: &mut Client, fleet: &Fleet, card: &Card, lease: i64) -> Result<(), String> {
    let value = serde_json::to_vec(card).map_err(|e| e.to_string())?;
    client
        .put(
            fleet.key(),
            value,
            Some(PutOptions::new().with_lease(lease)),
        )
        .await
        .map_err(|e| format!("publishing this hive: {e}"))?;
    fleet.set_own(card.clone());
    Ok(())
}

/// A value the watch or the read gave: a peer's card, or a warning.
fn take(fleet: &Fleet, key: &[u8], value: &[u8]) {
    let Ok(key) = std::str::from_utf8(key) else {
        return;
    };
    if let Err(why) = fleet.put(key, value) {
        tracing::warn!("fleet: ignored {why}");
    }
}

/// Each peer's queue, as its card says, in `/metrics`; a peer gone leaves it.
fn gauge_peers(gateway: &Gateway, fleet: &Fleet, gauged: &mut Vec<String>) {
    let family = &gateway.hive.metrics.fleet_peer_queue;
    let peers = fleet.peers();
    for gone in gauged
        .iter()
        .filter(|id| !peers.iter().any(|p| &p.id == *id))
    {
        family.remove(&PeerLabel { peer: gone.clone() });
    }
    gauged.clear();
    for p in peers {
        let queue: u64 = p.loaded.iter().map(|l| l.queue).sum();
        family
            .get_or_create(&PeerLabel { peer: p.id.clone() })
            .set(i64::try_from(queue).unwrap_or(i64::MAX));
        gauged.push(p.id);
    }
}
