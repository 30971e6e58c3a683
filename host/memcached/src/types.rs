//! The capability's values, as `wit/tenant-cache.wit` defines them
//! (`interface memcached`): the same names and shapes as the bindings
//! wit-bindgen generates, so the provider component lifts and lowers these
//! very types (its bindings remap them here), and the wasmtime host
//! converts its own bindings' to them at the capability's edge. The WIT
//! documents each one.
#![allow(missing_docs)]

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Limit {
    CommandsPerBatch(u32),
    ReplyBytes(u64),
    Budget(OverBudget),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Budget {
    BytesWritten,
    Commands,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OverBudget {
    pub budget: Budget,
    pub per_second: u64,
    pub burst: u64,
    pub retry_after_ms: Option<u64>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Error {
    Unavailable(String),
    ValueTooLarge(u64),
    InvalidKey(String),
    Protocol(String),
    OverLimit(Limit),
    Denied(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    Get(String),
    GetEarly(EarlyGet),
    Set(Item),
    Add(Item),
    Delete(String),
    GetWithCas(String),
    SetIfCas(CasItem),
    Increment(CounterDelta),
    NewVersion(NewVersion),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewVersion {
    pub key: String,
    pub write: VersionWrite,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VersionWrite {
    Overwrite,
    Create,
    Replace(u64),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CasItem {
    pub item: Item,
    pub cas: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CounterDelta {
    pub key: String,
    pub delta: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ValueWithCas {
    pub len: u32,
    pub cas: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EarlyGet {
    pub key: String,
    pub window: u32,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Item {
    pub key: String,
    pub value: Vec<u8>,
    pub ttl: Option<u32>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Value(u32),
    Refresh(ValueWithCas),
    Miss,
    Done,
    Exists,
    ValueWithCas(ValueWithCas),
    Minted(u64),
    NotANumber,
    Failed(Error),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Replies {
    pub outcomes: Vec<Outcome>,
    pub values: Vec<u8>,
}
