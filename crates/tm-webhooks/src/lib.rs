//! Webhook delivery and endpoint probes for the registry: tenants get change events
//! POSTed to their URLs, and the upstream endpoints of their routes get health-checked.
//!
//! This crate is only the network mechanism; the queue of jobs, the probe schedule, their
//! storage and the API live elsewhere. It has five parts:
//!
//! - [`new_secret`], [`secret_bytes`] and [`sign`]: Standard Webhooks secrets and
//!   signatures, so receivers can check deliveries with any Standard Webhooks library.
//! - [`NetworkPolicy`]: which addresses a delivery or a probe may go to, so a tenant's URL
//!   or endpoint cannot reach loopback, private networks or the cloud metadata service.
//! - [`check_url`]: the form of a webhook URL, checked when a tenant registers it.
//! - [`Deliverer`]: the HTTP client that signs, sends, and connects only to the addresses
//!   the policy permitted when it resolved the host.
//! - [`Prober`]: the HTTP(S) and TCP health probe of an endpoint, under the same policy
//!   and with the same resolver and literal checks as the [`Deliverer`].

mod client;
mod guard;
mod policy;
mod probe;
mod signature;
mod url_check;

pub use client::{Delivered, Deliverer, DeliveryError};
pub use guard::BuildError;
pub use policy::NetworkPolicy;
pub use probe::{ProbeFailure, ProbeOk, ProbeProtocol, ProbeRequest, Prober};
pub use signature::{
    new_secret, secret_bytes, sign, SecretError, HEADER_ID, HEADER_SIGNATURE, HEADER_TIMESTAMP,
};
pub use url_check::{check_url, UrlError, MAX_URL_LEN};
