//! Where tenant-cache's records live in memcached, relative to the
//! application prefix the host puts in front of every key. Shared by the
//! component, which writes the records, and the host, which confines a
//! grant bound to one tenant to that tenant's records.
//!
//! - [`parts`]: how a tenant, a key or an application name becomes a
//!   *part* of a key (printable ASCII, never holding `:`);
//! - [`records`]: the records of a tenant (`a`, `n:<tenant>`,
//!   `d:<tenant>:<key>`), and which of them a key is;
//! - [`version`]: the stored form of a namespace version.
#![no_std]
#![deny(missing_docs)]

extern crate alloc;

pub mod parts;
pub mod records;
pub mod version;
