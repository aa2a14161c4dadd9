//! The models the CLI offers, for `/claude model` autocomplete: asked once with the
//! `list_models` control request of the first live session (PERMISSIONS.md; `p_22`), then
//! cached for the life of the service. Until an answer comes, the list `p_22` recorded.

use std::sync::{Arc, Mutex, PoisonError};

/// What `list_models` answered in `p_22` (2.1.330): the values of its `models`.
pub const OBSERVED: [&str; 5] = ["default", "opus", "fable", "sonnet", "haiku"];

/// The shared, cached model list (cheap to clone).
#[derive(Debug, Clone, Default)]
pub struct ModelCatalog(Arc<Mutex<Option<Vec<String>>>>);

impl ModelCatalog {
    /// The models to offer: the CLI's answer once there is one, else [`OBSERVED`].
    pub fn known(&self) -> Vec<String> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
            .unwrap_or_else(|| OBSERVED.iter().map(ToString::to_string).collect())
    }

    /// Whether the CLI has answered.
    pub fn is_cached(&self) -> bool {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_some()
    }

    /// Keeps the CLI's answer (an empty one is ignored).
    pub fn set(&self, models: Vec<String>) {
        if !models.is_empty() {
            *self.0.lock().unwrap_or_else(PoisonError::into_inner) = Some(models);
        }
    }
}

/// The request id of the coordinator's `list_models`.
pub const REQUEST_ID: &str = "coordinator-list_models";
