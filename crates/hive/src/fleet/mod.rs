//! A lab of hives as one, on etcd (`--etcd`): each hive publishes its card under a
//! lease and watches the others', and the one endpoint sends a request for a model
//! this hive cannot serve to a peer that can.
//!
//! - `view.rs`: the cards, the link, and the rule that picks peers (pure);
//! - `etcd.rs`: how to reach etcd, and this hive's id;
//! - `card.rs`: this hive's own card, from its catalog, memory and workers;
//! - `membership.rs`: the etcd session: lease, publish on change, watch, rejoin.
//!
//! Forwarding itself is the gateway's (`gateway/peers.rs`).

pub mod card;
pub mod etcd;
pub mod membership;
pub mod view;
