//! A catalog that counts its writes: [`Generational`] wraps any backend and moves a
//! generation counter at every write through it, so what is derived from the
//! catalog (a serialized list, an index of aliases) knows when to rebuild without
//! each writer having to say so.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::{Artifact, ArtifactCatalog, ArtifactMetadata, ArtifactStatus, Quarantined, Result};

/// A backend, and how many writes went through it since it was opened.
pub struct Generational<T: Artifact> {
    inner: Box<dyn ArtifactCatalog<T>>,
    generation: AtomicU64,
}

impl<T: Artifact> std::fmt::Debug for Generational<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Generational")
            .field("generation", &self.generation())
            .finish_non_exhaustive()
    }
}

impl<T: Artifact> Generational<T> {
    /// Counts the writes to `inner` from now.
    pub fn new(inner: Box<dyn ArtifactCatalog<T>>) -> Self {
        Self {
            inner,
            generation: AtomicU64::new(0),
        }
    }

    /// How many writes went through this catalog: anything derived from it while
    /// this had one value is still true while it has it. Read it before reading the
    /// catalog, so a write during the read moves it past what was read.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    /// Moves the generation after a write (tried: a failed write may have changed
    /// something before it failed, and a spare rebuild costs little).
    fn wrote<R>(&self, result: R) -> R {
        self.generation.fetch_add(1, Ordering::SeqCst);
        result
    }
}

impl<T: Artifact> ArtifactCatalog<T> for Generational<T> {
    fn add(&self, artifact: T) -> Result<ArtifactMetadata<T>> {
        self.wrote(self.inner.add(artifact))
    }

    fn get(&self, id: &str) -> Result<Option<ArtifactMetadata<T>>> {
        self.inner.get(id)
    }

    fn list(&self) -> Result<Vec<ArtifactMetadata<T>>> {
        self.inner.list()
    }

    fn quarantine(&self) -> Result<Vec<Quarantined>> {
        self.wrote(self.inner.quarantine())
    }

    fn remove(&self, id: &str) -> Result<bool> {
        self.wrote(self.inner.remove(id))
    }

    fn len(&self) -> Result<usize> {
        self.inner.len()
    }

    fn modify(
        &self,
        id: &str,
        change: &mut dyn FnMut(&mut ArtifactMetadata<T>),
    ) -> Result<ArtifactMetadata<T>> {
        self.wrote(self.inner.modify(id, change))
    }

    fn contains(&self, id: &str) -> Result<bool> {
        self.inner.contains(id)
    }

    fn is_empty(&self) -> Result<bool> {
        self.inner.is_empty()
    }

    fn update(&self, artifact: T) -> Result<ArtifactMetadata<T>> {
        self.wrote(self.inner.update(artifact))
    }

    fn set_status(&self, id: &str, status: ArtifactStatus) -> Result<ArtifactMetadata<T>> {
        self.wrote(self.inner.set_status(id, status))
    }

    fn touch(&self, id: &str) -> Result<ArtifactMetadata<T>> {
        self.wrote(self.inner.touch(id))
    }

    fn find_by_source(
        &self,
        provider: &str,
        reference: &str,
    ) -> Result<Option<ArtifactMetadata<T>>> {
        self.inner.find_by_source(provider, reference)
    }
}
