//! Component tests: the real guest, in wasmtime, against memcached
//! processes each test starts on its own free loopback port. One file per
//! guarantee of docs/semantics.md.

// docs/semantics.md, one file per guarantee.
mod atomic_clears;
mod atomics;
mod concurrent_writes;
mod errors;
mod isolation;
mod keys;
mod linearizability;
mod resurrection;
mod round_trips;
mod ttl;
mod two_levels;

// Reliability and security: faults, hostile input, runaway guests, scoping.
mod containment;
mod faults;
mod hostile;
mod large_values;
mod limits;
mod memo;
mod observability;
mod scoping;
mod soak;
mod stampede;

// Scale-out and embedding: server pools, partitions, membership changes,
// async hosts, portability.
mod async_host;
mod binding;
mod budgets;
mod cluster;
mod coalescing;
mod keyvalue;
mod membership;
mod portability;

// Performance: what an instance per request costs.
mod fresh_instances;
