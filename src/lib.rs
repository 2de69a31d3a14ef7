// The README links its API names to source files, for reading it on GitHub; the first
// definition of a link wins, so these, given first, link the same names to their rustdoc.
//! [`AccessToken`]: AccessToken
//! [`Client::machines_for_users`]: Client::machines_for_users
//! [`Client::raw`]: Client::raw
//! [`Client::user_machine_pages`]: Client::user_machine_pages
//! [`Client::user_machines_json`]: Client::user_machines_json
//! [`ClientBuilder::base_url`]: ClientBuilder::base_url
//! [`ClientBuilder::cloud`]: ClientBuilder::cloud
//! [`ClientBuilder::connect_timeout`]: ClientBuilder::connect_timeout
//! [`ClientBuilder::max_response_bytes`]: ClientBuilder::max_response_bytes
//! [`ClientBuilder::scope`]: ClientBuilder::scope
//! [`ClientBuilder::timeout`]: ClientBuilder::timeout
//! [`Cloud`]: Cloud
//! [`EnvironmentCredential`]: EnvironmentCredential
//! [`Error::Credential`]: Error::Credential
//! [`Error::InvalidUserName`]: Error::InvalidUserName
//! [`Error::Throttled`]: Error::Throttled
//! [`Error`]: Error
//! [`Machine`]: types::Machine
//! [`RateLimit::default`]: RateLimit::default
//! [`RetryPolicy::default`]: RetryPolicy::default
//! [`TokenCredential`]: TokenCredential
//! [`UnknownFields`]: UnknownFields
//! [`UserName::parse`]: UserName::parse
//! [`UserName::oddity`]: UserName::oddity
//! [`types::Machine`]: types::Machine
#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]
#![forbid(unsafe_code)]
#![warn(missing_docs)]
// `Error` keeps the token endpoint's diagnostics inline; it is created on cold paths only.
#![allow(clippy::result_large_err)]

mod auth;
mod client;
mod cloud;
mod error;
mod fit;
mod generated;
mod hooks;
mod quota;
mod retry;
mod timestamp;
mod unknown;
mod user;

pub use async_trait::async_trait;
#[cfg(feature = "azure")]
#[cfg_attr(docsrs, doc(cfg(feature = "azure")))]
pub use auth::AzureCredential;
pub use auth::{
    AccessToken, ExposeSecret, IntoCredential, SecretString, StaticToken, TokenCredential,
    DEFAULT_SCOPE,
};
pub use auth::{
    ClientCertificateCredential, ClientSecretCredential, EnvironmentCredential,
    DEFAULT_AUTHORITY_HOST,
};
pub use client::{
    raw, Client, ClientBuilder, ClientStats, DEFAULT_BASE_URL, DEFAULT_MAX_RESPONSE_BYTES,
    USER_AGENT,
};
pub use cloud::{Cloud, ParseCloudError, Region};
pub use error::Error;
pub use quota::{RateLimit, MAX_WINDOW};
pub use retry::RetryPolicy;
pub use unknown::UnknownFields;
pub use user::{InvalidUserName, InvalidUserNameReason, UserName, MAX_USER_NAME_CHARS};

/// The API's data types, generated from `openapi/defender.yaml`.
///
/// [`Machine`](types::Machine) is the device record; its open enumerations keep
/// values the spec does not list in an `Other` variant, and its `extra` map (an
/// [`UnknownFields`]) keeps fields the spec does not know, so nothing the API sends
/// is lost on a round trip: serialised back, a machine has every field and value it
/// came with. Two things are written in their canonical form rather than as sent:
/// timestamps (the same instant, in UTC, with 0, 3, 6 or 9 fractional digits) and
/// `null` values of the fields the spec describes, which are left out, as a missing
/// field means the same. Unknown fields keep their `null`s, and are written as a
/// `serde_json::Value` writes them.
///
/// The records whose fields may all be empty (`Machine`, `IpAddress`,
/// `VmMetadata`, `MachineCollection`, …) implement `Default`, to build one naming
/// only the fields that matter (`Machine`'s default `id` is empty):
///
/// ```
/// use defender_endpoint::types::Machine;
///
/// let machine = Machine { id: "m1".into(), ..Default::default() };
/// assert_eq!(serde_json::to_string(&machine).unwrap(), r#"{"id":"m1"}"#);
/// ```
///
/// The documented values of each open enumeration (`HealthStatusKnown`, …) are a
/// `#[non_exhaustive]` enum, so that a value the spec adds later breaks no match:
/// a match on one needs a wildcard arm.
///
/// ```
/// use defender_endpoint::types::HealthStatusKnown;
///
/// fn reachable(status: HealthStatusKnown) -> bool {
///     match status {
///         HealthStatusKnown::Active => true,
///         HealthStatusKnown::Inactive | HealthStatusKnown::NoSensorData => false,
///         _ => false,
///     }
/// }
/// assert!(reachable(HealthStatusKnown::Active));
/// ```
///
/// ```compile_fail
/// use defender_endpoint::types::HealthStatusKnown as H;
///
/// // Every value listed today, and no wildcard: refused.
/// fn name(status: H) -> &'static str {
///     match status {
///         H::Active | H::Inactive | H::ImpairedCommunication | H::NoSensorData => "",
///         H::NoSensorDataImpairedCommunication | H::Unknown => "",
///     }
/// }
/// ```
pub mod types {
    pub use crate::generated::types::*;
}
