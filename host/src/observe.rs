//! What an operator sees: a `tracing` span per call of the component and
//! events where something went wrong, and counters through the `metrics`
//! facade, so any exporter (Prometheus, OpenTelemetry, ...) plugs in. The
//! library only emits; binaries install a subscriber and a recorder.
//!
//! Counters (labels: `app` always; `tenant` only when the grant asks for
//! it, since a platform with a million tenants must not get a million label
//! sets by default):
//! - `tenant_cache_calls_total{operation, outcome}`: `outcome` is `hit`,
//!   `miss`, `stored`, `removed`, `cleared`, `leased`, `stale`, `busy` or
//!   `error`;
//! - `tenant_cache_errors_total{operation, kind}`;
//! - `tenant_cache_bytes_read_total`, `tenant_cache_bytes_written_total`:
//!   value bytes handed to and taken from callers;
//! - `tenant_cache_round_trips_total`: batches the component sent, one per
//!   server reached;
//! - `tenant_cache_refused_batches_total{reason}`: batches the grant
//!   refused before anything was sent (`reason`: `denied`, `invalid_key`,
//!   `over_limit` or `budget`);
//! - per tenant, with bounded cardinality (see `usage`):
//!   `tenant_cache_tenant_batches_total`, `_bytes_written_total`,
//!   `_hits_total`, `_misses_total`, `_budget_refusals_total`, labelled
//!   `app` and `tenant`.

use std::time::Instant;

use metrics::{Counter, Label};
use tracing::Span;

use crate::error::CacheError;

/// The counters of one instance's calls, registered once each: building a
/// counter's key (labels, hashing) costs more than the rest of the
/// bookkeeping, recorder or not. Counters bind to the recorder installed
/// when they are first used, so install one before creating instances.
pub(crate) struct Meter {
    app: String,
    tenant_labels: bool,
    /// A dozen at most (operations × outcomes used): a scan beats hashing.
    counters: Vec<([&'static str; 3], Counter)>,
}

impl Meter {
    pub(crate) fn new(app: &str, tenant_labels: bool) -> Meter {
        Meter {
            app: app.to_owned(),
            tenant_labels,
            counters: Vec::new(),
        }
    }

    /// Adds `count` to counter `name`, labelled `labels` (name, value) and
    /// by application (and tenant, when asked for).
    fn add(&mut self, tenant: Option<&str>, name: &'static str, labels: [(&'static str, &'static str); 2], count: u64) {
        let all = || {
            let mut all = vec![Label::new("app", self.app.clone())];
            all.extend(
                labels
                    .iter()
                    .filter(|(key, _)| !key.is_empty())
                    .map(|&(key, value)| Label::new(key, value)),
            );
            all
        };
        match tenant.filter(|_| self.tenant_labels) {
            // A label set per tenant: registered each time, as asked.
            Some(tenant) => {
                let mut all = all();
                all.push(Label::new("tenant", tenant.to_owned()));
                metrics::counter!(name, all).increment(count);
            }
            None => {
                let key = [name, labels[0].1, labels[1].1];
                match self.counters.iter().find(|(known, _)| *known == key) {
                    Some((_, counter)) => counter.increment(count),
                    None => {
                        let counter = metrics::counter!(name, all());
                        counter.increment(count);
                        self.counters.push((key, counter));
                    }
                }
            }
        }
    }
}

/// One call of the component, being observed.
pub(crate) struct Call {
    span: Span,
    operation: &'static str,
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
    /// `get-or-lease` handed out the lease.
    Leased,
    /// `get-or-lease` returned the entry from before the last clear.
    Stale {
        bytes: u64,
    },
    /// `get-or-lease` found the lease held by another caller.
    Busy,
    /// `increment` counted.
    Counted,
    /// `compare-and-swap` found the entry changed, and stored nothing.
    Conflict,
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
            Outcome::Leased => "leased",
            Outcome::Stale { .. } => "stale",
            Outcome::Busy => "busy",
            Outcome::Counted => "counted",
            Outcome::Conflict => "conflict",
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
        CacheError::NotACounter(_) => "not_a_counter",
        CacheError::Trap(_) => "trap",
    }
}

/// No second label.
const NONE: (&str, &str) = ("", "");

impl Call {
    /// Starts observing `operation` (the export's WIT name) of `app` on
    /// `tenant`.
    pub(crate) fn start(operation: &'static str, app: &str, tenant: Option<&str>) -> Call {
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
            tenant: tenant.map(str::to_owned),
            started: Instant::now(),
        }
    }

    /// The call's span, to run the call in.
    pub(crate) fn span(&self) -> &Span {
        &self.span
    }

    /// Records how the call ended, in its span and in `meter`.
    pub(crate) fn finish<T>(
        self,
        meter: &mut Meter,
        result: &Result<T, CacheError>,
        outcome: impl FnOnce(&T) -> Outcome,
    ) {
        let tenant = self.tenant.as_deref();
        let operation = ("operation", self.operation);
        let elapsed = self.started.elapsed();
        match result {
            Ok(value) => {
                let outcome = outcome(value);
                self.span.record("outcome", outcome.label());
                meter.add(
                    tenant,
                    "tenant_cache_calls_total",
                    [operation, ("outcome", outcome.label())],
                    1,
                );
                match outcome {
                    Outcome::Hit { bytes } | Outcome::Read { bytes, .. } | Outcome::Stale { bytes } => {
                        self.span.record("bytes", bytes);
                        meter.add(tenant, "tenant_cache_bytes_read_total", [NONE, NONE], bytes);
                    }
                    Outcome::Stored { bytes } => {
                        self.span.record("bytes", bytes);
                        meter.add(tenant, "tenant_cache_bytes_written_total", [NONE, NONE], bytes);
                    }
                    _ => {}
                }
                if let Outcome::Read { hits, misses, .. } = outcome {
                    meter.add(tenant, "tenant_cache_keys_read_total", [("found", "true"), NONE], hits);
                    meter.add(
                        tenant,
                        "tenant_cache_keys_read_total",
                        [("found", "false"), NONE],
                        misses,
                    );
                }
                tracing::debug!(parent: &self.span, elapsed_us = elapsed.as_micros() as u64, "call done");
            }
            Err(error) => {
                let kind = kind(error);
                self.span.record("outcome", "error");
                meter.add(tenant, "tenant_cache_calls_total", [operation, ("outcome", "error")], 1);
                meter.add(tenant, "tenant_cache_errors_total", [operation, ("kind", kind)], 1);
                tracing::warn!(parent: &self.span, kind, elapsed_us = elapsed.as_micros() as u64, "call failed: {error}");
            }
        }
    }
}

/// The counter of batches a grant sends for `app`.
pub(crate) fn round_trips_counter(app: &str) -> Counter {
    metrics::counter!("tenant_cache_round_trips_total", "app" => app.to_owned())
}

/// A batch the grant refused before sending anything.
pub(crate) fn refused(app: &str, reason: &'static str, detail: &str) {
    metrics::counter!("tenant_cache_refused_batches_total", "app" => app.to_owned(), "reason" => reason).increment(1);
    tracing::warn!(app, reason, "batch refused: {detail}");
}

/// A tenant's usage in a window (`usage`): its counters, labelled by
/// application and tenant (a name, or `(others)`).
pub(crate) fn tenant_usage(app: &str, tenant: &str, counts: &crate::usage::Counts) {
    let measures = [
        ("tenant_cache_tenant_batches_total", counts.batches),
        ("tenant_cache_tenant_bytes_written_total", counts.bytes_written),
        ("tenant_cache_tenant_hits_total", counts.hits),
        ("tenant_cache_tenant_misses_total", counts.misses),
        ("tenant_cache_tenant_budget_refusals_total", counts.budget_refusals),
    ];
    for (name, count) in measures.into_iter().filter(|&(_, count)| count > 0) {
        let labels = [
            Label::new("app", app.to_owned()),
            Label::new("tenant", tenant.to_owned()),
        ];
        metrics::counter!(name, labels.iter()).increment(count);
    }
}
