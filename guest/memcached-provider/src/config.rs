//! The provider's configuration, from its environment (a runtime passes
//! it: `wasmtime run --env`, Spin's `environment`), and the grant it makes
//! of it: the same rules as the wasmtime host's grant, from the same crate.
//!
//! | variable | meaning | default |
//! |---|---|---|
//! | `TENANT_CACHE_MEMCACHED` | the pool, `HOST:PORT[,HOST:PORT...]` | required |
//! | `TENANT_CACHE_APP` | the application whose keys it reaches | `default` |
//! | `TENANT_CACHE_TENANT` | binds the grant to one tenant | unbound |
//! | `TENANT_CACHE_TIMEOUT_MS` | deadline of each exchange | 1000 |
//! | `TENANT_CACHE_ITEM_SIZE_LIMIT` | memcached's `-I`: bytes, or with `k` or `m` | `1m` |
//! | `TENANT_CACHE_TOKEN_SECRET` | seals swap and lease tokens (16 bytes or more) | a random key per instance |

use std::time::Duration;

use tenant_cache_memcached::confinement::Confinement;
use tenant_cache_memcached::pool::Pool;
use tenant_cache_memcached::rules::{self, BatchLimits, Rules};
use tenant_cache_memcached::tokens::{self, TokenKey};
use tenant_cache_memcached::types::{Command, Error, Replies};

use crate::sockets::Sockets;

/// A configured provider: the grant of one application's keys on one pool.
pub struct Provider {
    pool: Pool,
    sockets: Sockets,
    prefix: String,
    limits: BatchLimits,
    item_size_limit: u64,
    bound: Option<Confinement>,
    token_key: TokenKey,
}

/// The tenant the environment binds the grant to, if it binds one.
pub fn bound_tenant() -> Option<String> {
    std::env::var("TENANT_CACHE_TENANT").ok()
}

/// The number in variable `name`, or `default` when it is not set.
fn number(name: &str, default: u64) -> Result<u64, String> {
    match std::env::var(name) {
        Err(_) => Ok(default),
        Ok(text) => text
            .trim()
            .parse()
            .map_err(|_| format!("{name}={text:?} is not a whole number")),
    }
}

impl Provider {
    /// The provider the environment describes, or why it cannot be used.
    pub fn from_environment() -> Result<Provider, String> {
        let servers = std::env::var("TENANT_CACHE_MEMCACHED").map_err(|_| {
            String::from(
                "the memcached provider has no servers: set TENANT_CACHE_MEMCACHED=HOST:PORT[,HOST:PORT...] in its \
                 environment (wasmtime run --env TENANT_CACHE_MEMCACHED=...)",
            )
        })?;
        let app = std::env::var("TENANT_CACHE_APP").unwrap_or_else(|_| String::from("default"));
        let timeout = match number("TENANT_CACHE_TIMEOUT_MS", 1000)? {
            0 => return Err(String::from("TENANT_CACHE_TIMEOUT_MS must be at least 1")),
            millis => Duration::from_millis(millis),
        };
        let item_size_limit = match std::env::var("TENANT_CACHE_ITEM_SIZE_LIMIT") {
            Ok(text) => rules::parse_size(&text).map_err(|why| format!("TENANT_CACHE_ITEM_SIZE_LIMIT: {why}"))?,
            Err(_) => 1024 * 1024,
        };
        let token_key = match std::env::var("TENANT_CACHE_TOKEN_SECRET") {
            Ok(secret) => tokens::key_from_secret(secret.as_bytes()).ok_or_else(|| {
                format!(
                    "TENANT_CACHE_TOKEN_SECRET must be at least {} bytes, not {}",
                    tokens::MIN_SECRET,
                    secret.len()
                )
            })?,
            Err(_) => rand::random(),
        };
        let ids: Vec<String> = servers.split(',').map(|server| server.trim().to_owned()).collect();
        let sockets = Sockets::new(&ids, timeout, item_size_limit)?;
        Ok(Provider {
            pool: Pool::new(ids, timeout),
            sockets,
            prefix: rules::app_prefix(&app),
            limits: BatchLimits::default(),
            item_size_limit,
            bound: bound_tenant().map(|tenant| Confinement::new(&tenant)),
            token_key,
        })
    }

    fn rules(&self) -> Rules<'_> {
        Rules {
            prefix: &self.prefix,
            limits: self.limits,
            item_size_limit: self.item_size_limit,
        }
    }

    /// The capability's `execute`: the batch checked (the binding first),
    /// run under the pool record, its replies put back in the component's
    /// order.
    pub fn execute(&self, route: &str, mut commands: Vec<Command>) -> Result<Replies, Error> {
        if let Some(bound) = &self.bound {
            bound.admit(route, &commands)?;
        }
        let rewrites = self.rules().check_commands(&mut commands)?;
        let run = self.pool.execute_with(
            &self.sockets,
            &self.prefix,
            route.as_bytes(),
            &commands,
            self.limits.reply_bytes,
        );
        let mut replies = crate::sockets::complete(run)?;
        rewrites.apply(&mut replies);
        Ok(replies)
    }

    /// The capability's `broadcast`.
    pub fn broadcast(&self, mut commands: Vec<Command>) -> Result<Vec<u64>, Error> {
        if let Some(bound) = &self.bound {
            bound.admit_broadcast()?;
        }
        let minted = self.rules().check_broadcast(&mut commands)?;
        crate::sockets::complete(self.pool.broadcast_with(&self.sockets, &self.prefix, &commands))?;
        Ok(minted)
    }

    /// The capability's `mac`.
    pub fn code(&self, route: &str, message: &[u8]) -> Result<Vec<u8>, Error> {
        if let Some(bound) = &self.bound {
            bound.admit_route(route)?;
        }
        tokens::code(&self.token_key, &self.prefix, route, message)
    }
}
