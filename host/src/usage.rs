//! Per-tenant usage, as a platform bills and watches it: batches sent,
//! bytes written, entry reads found and missed, and batches a budget
//! refused, for each tenant of each application, counted at the grant (so
//! whatever component runs, and `wasi:keyvalue` apps too, are counted).
//!
//! Cardinality stays bounded: counts gather in a window (ten seconds by
//! default), and when it closes the `top` tenants of each application by
//! bytes written in it get counters labelled with their name, and every
//! other tenant's counts go to `tenant="(others)"`. Label sets live at
//! once: `top + 1` per application; a tenant gets its own only in a window
//! where it was among the top. Sums over all labels are exact.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A tenant's counts in a window.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Counts {
    pub(crate) batches: u64,
    pub(crate) bytes_written: u64,
    pub(crate) hits: u64,
    pub(crate) misses: u64,
    pub(crate) budget_refusals: u64,
}

impl Counts {
    fn add(&mut self, other: &Counts) {
        self.batches += other.batches;
        self.bytes_written += other.bytes_written;
        self.hits += other.hits;
        self.misses += other.misses;
        self.budget_refusals += other.budget_refusals;
    }
}

/// The label of every tenant outside an application's top in a window.
pub(crate) const OTHERS: &str = "(others)";

/// Tenants counted by name in one window, at most, across applications:
/// past it, a new tenant's counts go to its application's others at once.
const TENANTS_PER_WINDOW: usize = 100_000;

/// The usage of one backend's grants.
pub(crate) struct Usage {
    top: usize,
    window: Duration,
    counts: Mutex<Window>,
}

struct Window {
    opened: Instant,
    named: usize,
    apps: HashMap<Arc<str>, App>,
}

#[derive(Default)]
struct App {
    tenants: HashMap<String, Counts>,
    others: Counts,
}

impl Usage {
    /// Usage published every `window`, with the `top` tenants of each
    /// application by name.
    pub(crate) fn new(top: usize, window: Duration) -> Usage {
        Usage {
            top,
            window,
            counts: Mutex::new(Window {
                opened: Instant::now(),
                named: 0,
                apps: HashMap::new(),
            }),
        }
    }

    /// Adds `counts` to `tenant` of `app`; publishes the window if it is
    /// over.
    pub(crate) fn record(&self, app: &Arc<str>, tenant: &str, counts: Counts) {
        let mut window = self.counts.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let window = &mut *window;
        let named = &mut window.named;
        let entry = window.apps.entry(app.clone()).or_default();
        match entry.tenants.get_mut(tenant) {
            Some(known) => known.add(&counts),
            None if *named < TENANTS_PER_WINDOW => {
                *named += 1;
                entry.tenants.insert(tenant.to_owned(), counts);
            }
            None => entry.others.add(&counts),
        }
        if window.opened.elapsed() >= self.window {
            self.publish_window(window);
        }
    }

    /// Publishes what the window holds now, and opens a new one.
    pub(crate) fn publish(&self) {
        let mut window = self.counts.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        self.publish_window(&mut window);
    }

    fn publish_window(&self, window: &mut Window) {
        for (app, counts) in window.apps.drain() {
            for (tenant, counts) in ranked(counts, self.top) {
                crate::observe::tenant_usage(app.as_ref(), &tenant, &counts);
            }
        }
        window.named = 0;
        window.opened = Instant::now();
    }
}

/// The `top` tenants of `app` by bytes written (then batches), each with
/// its counts, then [`OTHERS`] with the rest, if any.
fn ranked(app: App, top: usize) -> Vec<(String, Counts)> {
    let mut tenants: Vec<(String, Counts)> = app.tenants.into_iter().collect();
    tenants.sort_by(|(a_name, a), (b_name, b)| {
        (b.bytes_written, b.batches, a_name).cmp(&(a.bytes_written, a.batches, b_name))
    });
    let mut others = app.others;
    for (_, counts) in tenants.drain(top.min(tenants.len())..) {
        others.add(&counts);
    }
    if others != Counts::default() {
        tenants.push((OTHERS.to_owned(), others));
    }
    tenants
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wrote(bytes_written: u64) -> Counts {
        Counts {
            batches: 1,
            bytes_written,
            ..Counts::default()
        }
    }

    #[test]
    fn the_top_writers_are_named_and_the_rest_summed_exactly() {
        let mut app = App::default();
        for (tenant, bytes) in [("small", 1), ("big", 100), ("mid", 10), ("tiny", 0)] {
            app.tenants.insert(tenant.into(), wrote(bytes));
        }
        app.others = wrote(5);
        let ranked = ranked(app, 2);
        let names: Vec<&str> = ranked.iter().map(|(name, _)| name.as_str()).collect();
        assert_eq!(names, ["big", "mid", OTHERS]);
        assert_eq!(
            ranked[2].1,
            Counts {
                batches: 3,
                bytes_written: 6,
                ..Counts::default()
            }
        );
    }

    #[test]
    fn nothing_outside_the_top_means_no_others() {
        let mut app = App::default();
        app.tenants.insert("only".into(), wrote(3));
        assert_eq!(ranked(app, 2), [("only".to_owned(), wrote(3))]);
    }
}
