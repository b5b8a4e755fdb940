//! The bounded queue in front of each model. A request holds a [`Ticket`] from its
//! arrival to its end; a model takes as many tickets as its workers have slots plus
//! the daemon's queue length (`--gateway-queue`), and refuses the next with a 429. A
//! ticketed request then waits in the hive for a free slot on its worker, so that
//! the wait is counted (`rbee_gateway_queue_wait_seconds`) and a client that gives
//! up leaves the queue at once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use model_catalog::ModelEntry;

use super::Gateway;
use super::GatewayError;
use crate::workers::{RequestGuard, WorkerRecord, WorkerState};

/// Requests holding a ticket, by model id.
#[derive(Debug, Default, Clone)]
pub struct Tickets(Arc<Mutex<HashMap<String, u64>>>);

impl Tickets {
    /// The requests holding a ticket for `model` now.
    pub fn held(&self, model: &str) -> u64 {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(model)
            .copied()
            .unwrap_or(0)
    }
}

/// A request's place in its model's queue, given back when dropped.
#[derive(Debug)]
pub struct Ticket {
    tickets: Tickets,
    model: String,
    /// When the request arrived.
    pub arrived: Instant,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut held = self
            .tickets
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = held.get_mut(&self.model) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                held.remove(&self.model);
            }
        }
    }
}

/// The slots a model's requests may use at once: its live workers' slots, else the
/// preset's, else one.
fn slots_of(state: &Gateway, model: &ModelEntry) -> u64 {
    let live: u64 = state
        .hive
        .workers
        .list()
        .into_iter()
        .filter(|w| w.model_ref == model.id && w.state.is_live())
        .map(|w| w.slots_total.unwrap_or(1))
        .sum();
    if live > 0 {
        live
    } else {
        model.preset.slots.map_or(1, u64::from)
    }
}

/// A ticket for a request to `model`, or a 429 when its slots and queue are full.
pub fn enter(state: &Gateway, model: &ModelEntry) -> Result<Ticket, GatewayError> {
    let slots = slots_of(state, model);
    let queue = state.hive.config.gateway_queue;
    let tickets = state.tickets.clone();
    let mut held = tickets.0.lock().unwrap_or_else(PoisonError::into_inner);
    let n = held.entry(model.id.clone()).or_default();
    if *n >= slots + queue {
        return Err(GatewayError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "queue_full",
            format!(
                "{} has {n} requests in progress; its {slots} slot(s) and a queue of {queue} are full, retry in a few seconds",
                model.id
            ),
        ));
    }
    *n += 1;
    drop(held);
    Ok(Ticket {
        tickets,
        model: model.id.clone(),
        arrived: Instant::now(),
    })
}

/// Waits, within `deadline`, for a free slot on `worker` and counts the request on
/// it. A worker that stops being ready meanwhile ends the wait with a 503.
pub async fn take_slot(
    state: &Gateway,
    worker: &WorkerRecord,
    deadline: Duration,
) -> Result<RequestGuard, GatewayError> {
    let waited_from = Instant::now();
    let until = tokio::time::Instant::now() + deadline;
    let guard = loop {
        let freed = state.hive.workers.slot_freed.notified();
        tokio::pin!(freed);
        freed.as_mut().enable();
        match state.hive.workers.get(&worker.id) {
            Some(w) if w.state == WorkerState::Ready => {}
            other => {
                return Err(GatewayError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "worker_failed",
                    format!(
                        "worker {} is {} while the request waited for a slot",
                        worker.id,
                        other.map_or("gone", |w| w.state.name())
                    ),
                ));
            }
        }
        if let Some(g) = state.hive.workers.try_begin_request(&worker.id) {
            break g;
        }
        // a slot frees, or the worker's state changes (seen on the next turn)
        let turn = (tokio::time::Instant::now() + Duration::from_secs(1)).min(until);
        if tokio::time::timeout_at(turn, freed).await.is_err() && turn == until {
            return Err(GatewayError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "queue_timeout",
                format!(
                    "no slot of worker {} came free within {}s",
                    worker.id,
                    deadline.as_secs()
                ),
            ));
        }
    };
    state
        .hive
        .metrics
        .gateway_queue_wait
        .get_or_create(&crate::metrics::ModelLabel {
            model: worker.model_ref.clone(),
        })
        .observe(waited_from.elapsed().as_secs_f64());
    Ok(guard)
}
