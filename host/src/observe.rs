//! What an operator sees: a `tracing` span per call of the component and
//! events where something went wrong, and counters through the `metrics`
//! facade, so any exporter (Prometheus, OpenTelemetry, ...) plugs in. The
//! library only emits; binaries install a subscriber and a recorder.
//!
//! Counters (labels: `app` always; `tenant` only when the grant asks for
//! it, since a platform with a million tenants must not get a million label
//! sets by default):
//! - `tenant_cache_calls_total{operation, outcome}`: `outcome` is `hit`,
//!   `miss`, `stored`, `removed`, `cleared` or `error`;
//! - `tenant_cache_errors_total{operation, kind}`;
//! - `tenant_cache_bytes_read_total`, `tenant_cache_bytes_written_total`:
//!   value bytes handed to and taken from callers;
//! - `tenant_cache_round_trips_total`: batches the component sent, one per
//!   server reached;
//! - `tenant_cache_refused_batches_total{reason}`: batches the grant
//!   refused before anything was sent.

use std::time::Instant;

use tracing::Span;

use crate::error::CacheError;

/// One call of the component, being observed.
pub(crate) struct Call {
    span: Span,
    operation: &'static str,
    app: String,
    tenant: Option<String>,
    started: Instant,
}

/// How a call ended, for its span and its counters.
pub(crate) enum Outcome {
    Hit {
        bytes: u64,
    },
    Miss,
    /// Some keys of a `get-many` found, some not.
    Read {
        hits: u64,
        misses: u64,
        bytes: u64,
    },
    Stored {
        bytes: u64,
    },
    Removed,
    Cleared,
}

impl Outcome {
    fn label(&self) -> &'static str {
        match self {
            Outcome::Hit { .. } => "hit",
            Outcome::Miss => "miss",
            Outcome::Read { .. } => "read",
            Outcome::Stored { .. } => "stored",
            Outcome::Removed => "removed",
            Outcome::Cleared => "cleared",
        }
    }
}

/// The kind of an error, as a label.
fn kind(error: &CacheError) -> &'static str {
    match error {
        CacheError::Unavailable(_) => "unavailable",
        CacheError::ValueTooLarge { .. } => "value_too_large",
        CacheError::InvalidInput(_) => "invalid_input",
        CacheError::Contention(_) => "contention",
        CacheError::OverLimit(_) => "over_limit",
        CacheError::Internal(_) => "internal",
        CacheError::Trap(_) => "trap",
    }
}

/// The labels of a call's counters.
fn labels(app: &str, tenant: Option<&str>) -> Vec<metrics::Label> {
    let mut labels = vec![metrics::Label::new("app", app.to_owned())];
    if let Some(tenant) = tenant {
        labels.push(metrics::Label::new("tenant", tenant.to_owned()));
    }
    labels
}

impl Call {
    /// Starts observing `operation` (the export's WIT name) of `app` on
    /// `tenant`; `label_tenant` adds the tenant to the counters' labels.
    pub(crate) fn start(operation: &'static str, app: &str, tenant: Option<&str>, label_tenant: bool) -> Call {
        let span = tracing::info_span!(
            "tenant_cache.call",
            operation,
            app,
            tenant = tenant.unwrap_or(""),
            outcome = tracing::field::Empty,
            bytes = tracing::field::Empty,
            server = tracing::field::Empty,
        );
        Call {
            span,
            operation,
            app: app.to_owned(),
            tenant: tenant.filter(|_| label_tenant).map(str::to_owned),
            started: Instant::now(),
        }
    }

    /// The call's span, to run the call in.
    pub(crate) fn span(&self) -> &Span {
        &self.span
    }

    /// Records how the call ended.
    pub(crate) fn finish<T>(self, result: &Result<T, CacheError>, outcome: impl FnOnce(&T) -> Outcome) {
        let labels = labels(&self.app, self.tenant.as_deref());
        let call_labels = |outcome: &'static str| {
            let mut labels = labels.clone();
            labels.push(metrics::Label::new("operation", self.operation));
            labels.push(metrics::Label::new("outcome", outcome));
            labels
        };
        let elapsed = self.started.elapsed();
        match result {
            Ok(value) => {
                let outcome = outcome(value);
                self.span.record("outcome", outcome.label());
                metrics::counter!("tenant_cache_calls_total", call_labels(outcome.label())).increment(1);
                match outcome {
                    Outcome::Hit { bytes } | Outcome::Read { bytes, .. } => {
                        self.span.record("bytes", bytes);
                        metrics::counter!("tenant_cache_bytes_read_total", labels.clone()).increment(bytes);
                    }
                    Outcome::Stored { bytes } => {
                        self.span.record("bytes", bytes);
                        metrics::counter!("tenant_cache_bytes_written_total", labels.clone()).increment(bytes);
                    }
                    _ => {}
                }
                if let Outcome::Read { hits, misses, .. } = outcome {
                    metrics::counter!("tenant_cache_keys_read_total", {
                        let mut labels = labels.clone();
                        labels.push(metrics::Label::new("found", "true"));
                        labels
                    })
                    .increment(hits);
                    metrics::counter!("tenant_cache_keys_read_total", {
                        let mut labels = labels;
                        labels.push(metrics::Label::new("found", "false"));
                        labels
                    })
                    .increment(misses);
                }
                tracing::debug!(parent: &self.span, elapsed_us = elapsed.as_micros() as u64, "call done");
            }
            Err(error) => {
                let kind = kind(error);
                self.span.record("outcome", "error");
                metrics::counter!("tenant_cache_calls_total", call_labels("error")).increment(1);
                let mut error_labels = labels;
                error_labels.push(metrics::Label::new("operation", self.operation));
                error_labels.push(metrics::Label::new("kind", kind));
                metrics::counter!("tenant_cache_errors_total", error_labels).increment(1);
                tracing::warn!(parent: &self.span, kind, elapsed_us = elapsed.as_micros() as u64, "call failed: {error}");
            }
        }
    }
}

/// Counts the batches a grant sent (`round_trips`, one per server
/// reached) for `app`.
pub(crate) fn round_trips(app: &str, round_trips: u64) {
    metrics::counter!("tenant_cache_round_trips_total", "app" => app.to_owned()).increment(round_trips);
}

/// A batch the grant refused before sending anything.
pub(crate) fn refused(app: &str, reason: &'static str, detail: &str) {
    metrics::counter!("tenant_cache_refused_batches_total", "app" => app.to_owned(), "reason" => reason).increment(1);
    tracing::warn!(app, reason, "batch refused: {detail}");
}

/// The server a call's batch went to, on the call's span.
pub(crate) fn server(address: &str) {
    Span::current().record("server", address);
}
