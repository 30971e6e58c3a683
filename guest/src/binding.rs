//! The tenant binding: which tenants an instance serves, and where its
//! `wasi:keyvalue` buckets live.
//!
//! A host may bind its grant to one tenant (the customer whose app runs).
//! A bound instance then serves that tenant only, through every export.
//!
//! - On a grant bound to a tenant, every bucket lives inside that tenant:
//!   key `K` of bucket `B` is the tenant's key `B:K`, with `B` encoded as
//!   `tenant_cache_layout::parts` encodes parts (percent-encoded, or hashed when
//!   long; never holding `:`), which makes the mapping injective: no
//!   bucket name and key can name another bucket's key.
//! - On an unbound grant the identifier is the tenant, and the bucket's
//!   keys are the tenant's keys as they are.

use alloc::borrow::Cow;
use alloc::format;
use alloc::string::String;

use crate::bindings::exports::tenant_cache::cache::tenant_cache::Error;

/// The tenant a grant is bound to, if any.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Binding(Option<String>);

impl Binding {
    /// The binding the host reported.
    pub fn new(tenant: Option<String>) -> Binding {
        Binding(tenant)
    }

    /// Whether a call naming `tenant` may run.
    pub fn admits(&self, tenant: &str) -> Result<(), Error> {
        match &self.0 {
            Some(bound) if bound != tenant => Err(Error::InvalidInput(format!(
                "this instance is bound to tenant {bound:?} and cannot reach tenant {tenant:?}"
            ))),
            _ => Ok(()),
        }
    }

    /// Whether a call reaching every tenant (`clear-all`) may run.
    pub fn admits_all(&self) -> Result<(), Error> {
        match &self.0 {
            Some(bound) => Err(Error::InvalidInput(format!(
                "this instance is bound to tenant {bound:?} and cannot clear every tenant"
            ))),
            None => Ok(()),
        }
    }

    /// The bucket `identifier` opens.
    pub fn open(&self, identifier: &str) -> Bucket {
        Bucket::open(self.0.as_deref(), identifier)
    }
}

/// An open bucket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bucket {
    tenant: String,
    /// `<encoded bucket name>:` for a bucket inside a bound tenant.
    prefix: Option<String>,
}

impl Bucket {
    /// The bucket `identifier` opens for a grant bound to `bound` (if any).
    fn open(bound: Option<&str>, identifier: &str) -> Bucket {
        match bound {
            None => Bucket {
                tenant: String::from(identifier),
                prefix: None,
            },
            Some(tenant) => {
                // Encoded like a tenant: percent-encoded, or hashed when long.
                let mut prefix = tenant_cache_layout::parts::encode_part(identifier);
                prefix.push(':');
                Bucket {
                    tenant: String::from(tenant),
                    prefix: Some(prefix),
                }
            }
        }
    }

    /// The tenant the bucket lives in.
    pub fn tenant(&self) -> &str {
        &self.tenant
    }

    /// The tenant's key for `key` of this bucket.
    pub fn key<'a>(&self, key: &'a str) -> Cow<'a, str> {
        match &self.prefix {
            None => Cow::Borrowed(key),
            Some(prefix) => {
                let mut full = String::with_capacity(prefix.len() + key.len());
                full.push_str(prefix);
                full.push_str(key);
                Cow::Owned(full)
            }
        }
    }

    /// The tenant's key for `key` of this bucket, reusing `key`.
    pub fn own_key(&self, key: String) -> String {
        match &self.prefix {
            None => key,
            Some(_) => self.key(&key).into_owned(),
        }
    }

    /// The tenant's keys for `keys` of this bucket.
    pub fn keys<'a>(&self, keys: &'a [String]) -> Cow<'a, [String]> {
        match &self.prefix {
            None => Cow::Borrowed(keys),
            Some(_) => Cow::Owned(keys.iter().map(|key| self.key(key).into_owned()).collect()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bound_instance_serves_its_tenant_only() {
        let bound = Binding::new(Some("acme".into()));
        assert!(bound.admits("acme").is_ok());
        assert!(matches!(bound.admits("globex"), Err(Error::InvalidInput(_))));
        assert!(matches!(bound.admits_all(), Err(Error::InvalidInput(_))));
        let unbound = Binding::default();
        assert!(unbound.admits("globex").is_ok() && unbound.admits_all().is_ok());
    }

    #[test]
    fn unbound_buckets_are_tenants_with_their_keys() {
        let bucket = Bucket::open(None, "acme");
        assert_eq!(bucket.tenant(), "acme");
        assert_eq!(bucket.key("a:b"), "a:b");
    }

    #[test]
    fn bound_buckets_live_inside_the_bound_tenant() {
        let bucket = Bucket::open(Some("acme"), "other-tenant");
        assert_eq!(bucket.tenant(), "acme");
        assert_eq!(bucket.key("k"), "other-tenant:k");
    }

    #[test]
    fn bucket_names_cannot_forge_another_buckets_keys() {
        // ("a:b", "c") and ("a", "b:c") would both be "a:b:c" unescaped.
        let one = Bucket::open(Some("t"), "a:b").key("c").into_owned();
        let two = Bucket::open(Some("t"), "a").key("b:c").into_owned();
        assert_ne!(one, two);
        let long = "x".repeat(500);
        let hashed = Bucket::open(Some("t"), &long);
        assert!(hashed.key("k").starts_with('#'));
        assert_ne!(hashed.key("k"), Bucket::open(Some("t"), &"x".repeat(501)).key("k"));
        // A hashed name never meets an escaped one: escaping keeps no '#'.
        assert_eq!(Bucket::open(Some("t"), "#").key("k"), "%23:k");
    }
}
