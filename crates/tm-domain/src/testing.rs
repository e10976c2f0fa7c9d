//! What the unit tests of this crate build their routes with.

use crate::{
    EnvName, NewRoute, Route, RouteId, RouteKey, ServiceName, TenantId, UpstreamUrl, Version,
    Weight,
};

/// A new route, valid by construction.
pub(crate) fn route(
    tenant: &str,
    service: &str,
    env: &str,
    version: &str,
    url: &str,
    weight: u8,
    active: bool,
) -> Route {
    NewRoute {
        key: RouteKey {
            tenant: TenantId::parse(tenant).expect("valid"),
            service: ServiceName::parse(service).expect("valid"),
            env: EnvName::parse(env).expect("valid"),
            version: Version::parse(version).expect("valid"),
        },
        url: UpstreamUrl::parse(url).expect("valid"),
        active,
        weight: Weight::parse(i64::from(weight)).expect("valid"),
    }
    .into_route(RouteId::generate(), crate::now())
}
