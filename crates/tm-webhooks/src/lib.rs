//! Webhook delivery for the registry: tenants get change events POSTed to their URLs.
//!
//! This crate is only the delivery mechanism; the queue of jobs, their storage and the API
//! live elsewhere. It has four parts:
//!
//! - [`new_secret`], [`secret_bytes`] and [`sign`]: Standard Webhooks secrets and
//!   signatures, so receivers can check deliveries with any Standard Webhooks library.
//! - [`NetworkPolicy`]: which addresses a delivery may go to, so a tenant's URL cannot
//!   reach loopback, private networks or the cloud metadata service.
//! - [`check_url`]: the form of a webhook URL, checked when a tenant registers it.
//! - [`Deliverer`]: the HTTP client that signs, sends, and connects only to the addresses
//!   the policy permitted when it resolved the host.

mod client;
mod policy;
mod signature;
mod url_check;

pub use client::{BuildError, Delivered, Deliverer, DeliveryError};
pub use policy::NetworkPolicy;
pub use signature::{
    new_secret, secret_bytes, sign, SecretError, HEADER_ID, HEADER_SIGNATURE, HEADER_TIMESTAMP,
};
pub use url_check::{check_url, UrlError, MAX_URL_LEN};
