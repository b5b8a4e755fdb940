//! A lab of hives as one, on etcd (`--etcd`): what a hive knows of its fleet. Each
//! hive publishes its card under a lease and watches the others' (`membership/`),
//! and the one endpoint sends a request for a model this hive cannot serve to a peer
//! that can (`gateway/peers.rs`).
//!
//! - `view.rs`: the cards, the link, and the rule that picks peers (pure);
//! - `etcd.rs`: how to reach etcd, and this hive's id.

pub mod etcd;
pub mod view;
